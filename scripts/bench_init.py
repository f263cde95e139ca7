"""Benchmark GeoRA's initialisation: the exact path against the default, per weight shape.

    python scripts/bench_init.py --device cpu --shapes 4096x4096 --spectrum both --json out.json
    python scripts/bench_init.py --quick                  # two small shapes, a few seconds
    python scripts/bench_init.py --device cuda            # Qwen3-8B's four distinct shapes
    python scripts/bench_init.py --model /path/to/Qwen3-8B --layers 0,35   # real weights

For each (shape, spectrum) it times `geora.init.geora_init` twice over: svd="exact" (two
full LAPACK SVDs, `--exact-repeats` runs) and the default (seeded randomized block Krylov
SVD, `--repeats` runs after one untimed warm-up), medians, CUDA synchronised. Both paths
find the thresholds with the same exact selection. Reported per entry:
- exact_s, fast_s, speedup = exact_s / fast_s, fast_first_s (the warm-up call);
- energy_ratio: share of W_geo's exact top-r energy (sum of its r largest squared singular
  values, torch.linalg.svdvals) that the default path's factors capture, i.e.
  ||P_B W_geo||_F^2 / sum_{i<r} sigma_i(W_geo)^2 with P_B the projector onto span(B),
  W_geo being the default path's own; energy_ratio_w: the same for its first
  decomposition (the top-r triplets of W that define M_spec);
- m_euc_identical (must be true: M_euc needs no SVD), m_spec_agreement (fraction of
  entries where the two paths' M_spec agree; they differ only through W_hat_r);
- reproducible: every timed run returned bitwise the warm-up's factors and masks;
- krylov_steps of the two randomized SVDs, and the load average around each timing
  (exact_measured_at / exact_loadavg: when the exact path ran, maybe in a cached run).
And a whole-model estimate: the per-shape medians summed over Qwen3-8B's 252 target
matrices (36 layers x q, o 4096x4096; k, v 1024x4096; gate, up 12288x4096; down
4096x12288), or over a checkpoint's own matrices with --model.

Synthetic spectra (weights in fp32, seeded by --seed; the same for every run):
- powerlaw: W = U diag(sigma) V^T, sigma_i = (1 + i)^-0.5 for i < min(m, n), U (m, k) and
  V (n, k) the Q factors of seeded standard Gaussian matrices (orthonormal columns);
- flat: W = 0.02 * G, G seeded standard Gaussian, whose top singular values lie within a
  few percent of each other: the hard case for randomized SVDs.
Needs only torch (safetensors for --model). The exact path costs minutes per large shape
on a CPU: --exact-cache DIR keeps its results per weight, --skip-exact-above N skips it
(and the accuracy columns, which need an exact SVD too) above N entries.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout
from geora import krylov, linalg  # noqa: E402
from geora.fileio import atomic_write_json, git_info  # noqa: E402
from geora.init import geora_init, spectral_triplets  # noqa: E402

# Qwen3-8B: 36 layers; q, o (4096, 4096); k, v (1024, 4096); gate, up (12288, 4096);
# down (4096, 12288); (out, in) as stored by nn.Linear.
QWEN3_8B_COUNTS = {(4096, 4096): 72, (1024, 4096): 72, (12288, 4096): 72, (4096, 12288): 36}
QUICK_SHAPES = "256x256,192x320"
TARGET_RE = re.compile(r"layers\.(\d+)\.(?:self_attn|mlp)\.(q|k|v|o|gate|up|down)_proj\.weight$")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--shapes", default=",".join(f"{m}x{n}" for m, n in QWEN3_8B_COUNTS),
                   help="comma-separated OUTxIN weight shapes")
    p.add_argument("--quick", action="store_true",
                   help=f"shapes {QUICK_SHAPES}, 2 repeats: a smoke test in seconds")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--spectrum", default="both", choices=("powerlaw", "flat", "both"))
    p.add_argument("--model", default=None,
                   help="local checkpoint folder (*.safetensors): benchmark its q..down "
                        "weights of --layers instead of synthetic ones")
    p.add_argument("--layers", default="0", help="with --model: comma-separated layers")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--rho", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0, help="weights and SVD probes")
    p.add_argument("--repeats", type=int, default=5, help="timed runs of the default path")
    p.add_argument("--exact-repeats", type=int, default=1, help="timed runs of the exact path")
    p.add_argument("--skip-exact-above", type=int, default=0,
                   help="skip the exact path above this many entries (0: never)")
    p.add_argument("--exact-cache", default=None,
                   help="folder caching the exact path's timings and masks per weight")
    p.add_argument("--json", default=None, help="write the results here")
    return p


def parse_shapes(text: str) -> list[tuple[int, int]]:
    shapes = []
    for item in text.split(","):
        m = re.fullmatch(r"\s*(\d+)x(\d+)\s*", item)
        if not m or not int(m[1]) or not int(m[2]):
            raise SystemExit(f"--shapes: {item!r} is not OUTxIN with positive sizes")
        shapes.append((int(m[1]), int(m[2])))
    return shapes


def synthetic_weight(shape, spectrum: str, seed: int, device: str) -> torch.Tensor:
    """The fp32 weight of the module docstring's `spectrum` (seeded, on `device`)."""
    m, n = shape
    gen = torch.Generator(device=device).manual_seed(seed)
    if spectrum == "flat":
        return 0.02 * torch.randn(m, n, generator=gen, device=device)
    k = min(m, n)
    u = torch.linalg.qr(torch.randn(m, k, generator=gen, device=device)).Q
    v = torch.linalg.qr(torch.randn(n, k, generator=gen, device=device)).Q
    sigma = (1.0 + torch.arange(k, device=device, dtype=torch.float32)).pow(-0.5)
    return (u * sigma) @ v.T


def checkpoint_weights(folder: str, layers: list[int]):
    """(name, weight) of every q..down projection of `layers` in a local safetensors
    checkpoint, and the count of target matrices per shape over all its layers."""
    from safetensors import safe_open
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise SystemExit(f"--model {folder!r}: no *.safetensors files in that folder")
    picked, counts = [], {}
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                hit = TARGET_RE.search(name)
                if not hit:
                    continue
                shape = tuple(f.get_slice(name).get_shape())
                counts[shape] = counts.get(shape, 0) + 1
                if int(hit[1]) in layers:
                    picked.append((name, f.get_tensor(name)))
    if not picked:
        raise SystemExit(f"--model {folder!r}: no q/k/v/o/gate/up/down_proj weights of "
                         f"layers {layers}")
    return sorted(picked), counts


def timed(fn, device: str):
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def same_factors(f, g) -> bool:
    return all(torch.equal(getattr(f, k), getattr(g, k))
               for k in ("A", "B", "residual", "mask_spec", "mask_euc"))


def captured(w: torch.Tensor, b: torch.Tensor, top_energy: float) -> float:
    """||P_B w||_F^2 / top_energy, P_B the projector onto span(B) (out, r)."""
    q = torch.linalg.qr(b.double()).Q
    return float((q.T @ w.double()).pow(2).sum()) / top_energy


def exact_path(w, args, cache_dir):
    """Exact-path timings and masks, from the cache when this weight was run before."""
    path = None
    if cache_dir:
        key = hashlib.sha1(w.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        key.update(f"{w.dtype},{args.rank},{args.rho},{args.exact_repeats},{w.device.type},"
                   f"{torch.__version__}".encode())
        path = Path(cache_dir) / f"exact_{key.hexdigest()[:20]}.pt"
    if path is not None and path.is_file():
        return torch.load(path, map_location=w.device)
    runs, f, load = [], None, os.getloadavg()
    for _ in range(args.exact_repeats):
        t, f = timed(lambda: geora_init(w, args.rank, args.rho, svd="exact"), args.device)
        runs.append(t)
    out = dict(runs=runs, mask_spec=f.mask_spec, mask_euc=f.mask_euc,
               measured_at=time.strftime("%Y-%m-%dT%H:%M:%S"), loadavg=load)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.cpu() if torch.is_tensor(v) else v for k, v in out.items()}, path)
    return out


def bench_one(w, label: dict, args, sigma_w=None) -> dict:
    """One entry: time both paths on w (out, in), then the accuracy of the default."""
    run = lambda: geora_init(w, args.rank, args.rho, seed=args.seed)  # noqa: E731
    first_s, f0 = timed(run, args.device)
    fast, reproducible = [], True
    for _ in range(args.repeats):
        t, f = timed(run, args.device)
        fast.append(t)
        reproducible &= same_factors(f, f0)
    entry = dict(label, fast_s=statistics.median(fast), fast_runs=fast, fast_first_s=first_s,
                 krylov_steps=f0.krylov_steps, loadavg=os.getloadavg(),
                 reproducible=reproducible, exact_s=None, speedup=None, energy_ratio=None,
                 energy_ratio_w=None, m_euc_identical=None, m_spec_agreement=None)
    if args.skip_exact_above and w.numel() > args.skip_exact_above:
        entry["note"] = f"exact path skipped: {w.numel()} > --skip-exact-above entries"
        return entry
    ex = exact_path(w, args, args.exact_cache)
    w32 = w.float()
    w_geo = w32 * (f0.mask_spec | f0.mask_euc)
    top_geo = float(torch.linalg.svdvals(w_geo)[:args.rank].double().pow(2).sum())
    if sigma_w is None:
        sigma_w = torch.linalg.svdvals(w32)
    u1 = spectral_triplets(w32, args.rank, seed=args.seed)[0]   # the default's first SVD
    entry.update(
        exact_s=statistics.median(ex["runs"]), exact_runs=ex["runs"],
        exact_measured_at=ex["measured_at"], exact_loadavg=ex["loadavg"],
        speedup=statistics.median(ex["runs"]) / entry["fast_s"],
        energy_ratio=captured(w_geo, f0.B, top_geo),
        energy_ratio_w=captured(w32, u1, float(sigma_w[:args.rank].double().pow(2).sum())),
        m_euc_identical=torch.equal(f0.mask_euc, ex["mask_euc"]),
        m_spec_agreement=float((f0.mask_spec == ex["mask_spec"]).double().mean()),
        m_spec_count=[int(f0.mask_spec.sum()), int(ex["mask_spec"].sum())])
    return entry


def model_estimate(entries: list[dict], counts: dict) -> dict:
    """Per group (spectrum): sum over `counts` of count x per-shape median seconds."""
    out = {}
    for spectrum in sorted({e["spectrum"] for e in entries}):
        per_shape = {}
        for e in entries:
            if e["spectrum"] == spectrum:
                per_shape.setdefault(tuple(e["shape"]), []).append(e)
        missing = [f"{m}x{n}" for m, n in counts if (m, n) not in per_shape]
        est = dict(matrices=sum(counts.values()), missing_shapes=missing)
        for key in ("fast_s", "exact_s"):
            vals = {s: [e[key] for e in es if e[key] is not None] for s, es in per_shape.items()}
            if missing or not all(vals.get(s) for s in counts):
                est[key] = None
            else:
                est[key] = sum(c * statistics.median(vals[s]) for s, c in counts.items())
        out[spectrum] = est
    return out


def machine_info(device: str) -> dict:
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = dict(device=device, cpu=name, cpu_count=os.cpu_count(),
                threads=torch.get_num_threads(), torch=torch.__version__,
                python=platform.python_version(), git=git_info())
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available to torch on this machine")
    if args.quick:
        args.shapes, args.repeats = QUICK_SHAPES, min(args.repeats, 2)
    linalg.check_rho(args.rho, "--rho")
    entries, load0 = [], os.getloadavg()
    if args.model:
        layers = [int(x) for x in args.layers.split(",")]
        weights, counts = checkpoint_weights(args.model, layers)
        for name, w in weights:
            e = bench_one(w.to(args.device), dict(shape=list(w.shape), spectrum="checkpoint",
                                                  name=name, dtype=str(w.dtype)), args)
            entries.append(e)
            print_entry(e)
    else:
        counts = QWEN3_8B_COUNTS
        spectra = ("powerlaw", "flat") if args.spectrum == "both" else (args.spectrum,)
        for shape in parse_shapes(args.shapes):
            for spectrum in spectra:
                w = synthetic_weight(shape, spectrum, args.seed, args.device)
                sigma = None
                if spectrum == "powerlaw":   # known by construction (to fp32 rounding)
                    sigma = (1.0 + torch.arange(min(shape))).pow(-0.5)
                e = bench_one(w, dict(shape=list(shape), spectrum=spectrum), args, sigma)
                entries.append(e)
                print_entry(e)
                del w
    result = dict(machine=machine_info(args.device), loadavg_start=load0,
                  loadavg_end=os.getloadavg(), rank=args.rank, rho=args.rho, seed=args.seed,
                  defaults=dict(oversample=krylov.RSVD_OVERSAMPLE, tol=krylov.RSVD_TOL,
                                settle_steps=krylov.RSVD_SETTLE_STEPS),
                  entries=entries, model_estimate=model_estimate(entries, counts))
    for spectrum, est in result["model_estimate"].items():
        fmt = lambda x: "n/a" if x is None else f"{x:.1f} s"  # noqa: E731
        print(f"whole model ({est['matrices']} matrices, {spectrum}): default "
              f"{fmt(est['fast_s'])}, exact {fmt(est['exact_s'])}"
              + (f" (shapes not run: {est['missing_shapes']})" if est["missing_shapes"] else ""))
    if args.json:
        atomic_write_json(args.json, result)
    return result


def print_entry(e: dict) -> None:
    f = lambda x, spec: "n/a" if x is None else format(x, spec)  # noqa: E731
    print(f"{e['shape'][0]}x{e['shape'][1]} {e.get('name', e['spectrum'])}: "
          f"exact {f(e['exact_s'], '.3f')} s, default {e['fast_s']:.3f} s, speedup "
          f"{f(e['speedup'], '.1f')}x, energy {f(e['energy_ratio'], '.4f')} "
          f"(W: {f(e['energy_ratio_w'], '.4f')}), M_euc identical {e['m_euc_identical']}, "
          f"M_spec agreement {f(e['m_spec_agreement'], '.4f')}, Krylov steps "
          f"{e['krylov_steps']}, reproducible {e['reproducible']}", flush=True)


if __name__ == "__main__":
    main()
