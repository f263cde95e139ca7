"""The prepared GPU check: one command that exercises the real training path on one CUDA GPU
(H100/H200, <= 8 minutes) and writes one JSON of what passed and the figures.

    scripts/fetch_gpu_wheels.sh .gpu-wheels                    # here, with PyPI access
    python3 scripts/gpu_check.py --wheels .gpu-wheels --out gpu_check.json   # on the GPU
    python3 scripts/gpu_check.py --cpu-smoke --out smoke.json  # the same steps, toy size, CPU

Steps (each recorded in the JSON, which is rewritten after every step, so a run cut short
still says how far it got):
  wheels   install the folder's pure-Python wheels (trl, hydra, datasets, math-verify...,
           which the offline GPU machine lacks) into a private --target folder put on the
           PYTHONPATH of every later step; the machine's own environment is not touched
  imports  import what run.py needs; record the versions and the device
  pytest   the GPU-marked tests (`pytest -m gpu`; on the CPU they are skipped)
  init     geora_init of every Qwen3-8B target shape (252 matrices, random bf16 weights),
           streamed one at a time on the GPU: total time, per-module-type medians, peak memory
  train    run.py for geora, lora, pissa, sparseft, fullft: 3 GRPO steps each on a
           random-init Qwen3-0.6B with the real Qwen3 tokenizer (bundled), bf16 (fullft: fp32
           master weights, bf16 autocast), eval=none, the DeepMath fixture records
--cpu-smoke: the same steps on the CPU at toy size (a 2-layer Qwen3 with the real tokenizer,
fp32, 1 step; a tiny model's shapes); tests/test_gpu_check.py runs it in CI.

Exit status 0 when every step passed, 1 otherwise, 2 for bad input (one line: a missing
wheel folder or wheel, a CUDA check without CUDA).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("geora", "lora", "pissa", "sparseft", "fullft")
STEPS = ("wheels", "imports", "pytest", "init", "train")
# Import name -> distribution: what run.py needs that the GPU machine lacks (pure Python).
NEEDED = {"trl": "trl", "datasets": "datasets", "hydra": "hydra-core",
          "omegaconf": "omegaconf", "antlr4": "antlr4-python3-runtime",
          "math_verify": "math-verify", "latex2sympy2_extended": "latex2sympy2_extended",
          "dill": "dill", "multiprocess": "multiprocess"}
VERSIONS_OF = ("torch", "transformers", "peft", "accelerate", "trl", "datasets", "hydra-core",
               "omegaconf", "math-verify", "tokenizers", "safetensors", "numpy", "pyarrow")
FIXTURE = ROOT / "tests" / "fixtures" / "train" / "deepmath_103k.jsonl"


class BadInput(Exception):
    """Stops the check before anything runs, with one line."""


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins() -> dict[str, str]:
    """constraints.txt: normalised name -> pinned version."""
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, sep, version = line.split("#")[0].strip().partition("==")
        if sep:
            out[norm(name)] = version.strip()
    return out


# --------------------------------------------------------------------------------- wheels
def wheel_folder(path: str) -> dict[str, tuple[str, Path]]:
    """The folder's wheels, {normalised name: (version, file)}; one line for what is wrong."""
    folder = Path(path)
    if not folder.is_dir():
        raise BadInput(f"--wheels {path!r}: no such folder (fetch it with "
                       f"scripts/fetch_gpu_wheels.sh {path})")
    wheels = {}
    for whl in sorted(folder.glob("*.whl")):
        name, version = whl.name.split("-")[:2]
        if norm(name) in wheels:
            raise BadInput(f"--wheels {path!r}: two wheels of {name}: keep one")
        wheels[norm(name)] = (version, whl)
    missing = [d for d in NEEDED.values() if norm(d) not in wheels]
    if missing:
        raise BadInput(f"--wheels {path!r} has no wheel for {', '.join(missing)} (fetch them "
                       f"with scripts/fetch_gpu_wheels.sh {path})")
    pinned = pins()
    off = [f"{n} {v} (constraints.txt: {pinned[n]})" for n, (v, _) in wheels.items()
           if n in pinned and pinned[n] != v]
    if off:
        raise BadInput(f"--wheels {path!r}: {off[0]}: fetch the pinned versions")
    return wheels


def install_wheels(wheels: dict, site: Path) -> dict:
    t0 = time.perf_counter()
    files = [str(f) for _, f in wheels.values()]
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
           "--no-compile", "--no-cache-dir", "--disable-pip-version-check", "--target",
           str(site), *files]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    return {"passed": res.returncode == 0, "s": round(time.perf_counter() - t0, 1),
            "installed": {n: v for n, (v, _) in sorted(wheels.items())},
            "size_mib": round(sum(Path(f).stat().st_size for f in files) / 2**20, 1),
            **({} if res.returncode == 0 else {"error": res.stderr[-2000:]})}


def missing_modules(env: dict) -> list[str]:
    code = ("import importlib.util, json; print(json.dumps([m for m in %r "
            "if importlib.util.find_spec(m) is None]))" % list(NEEDED))
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120)
    return json.loads(res.stdout)


# --------------------------------------------------------------------------------- steps
def run(cmd: list[str], env: dict, timeout: float, log: Path) -> tuple[int, float]:
    """Run a subprocess with its output in `log`; (exit code, seconds); 124 on timeout."""
    t0 = time.perf_counter()
    with open(log, "w") as out:
        try:
            rc = subprocess.run(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                timeout=max(timeout, 1)).returncode
        except subprocess.TimeoutExpired:
            rc = 124
    return rc, round(time.perf_counter() - t0, 1)


def tail(path: Path, n: int = 1500) -> str:
    return path.read_text(errors="replace")[-n:] if path.is_file() else ""


IMPORTS = """
import json, sys, torch
from importlib import metadata
import trl, hydra, omegaconf, datasets, math_verify, transformers, peft, accelerate
import geora.training.pipeline, geora.training.grpo
def version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
cuda = torch.cuda.is_available()
print(json.dumps({"python": sys.version.split()[0],
                  "versions": {n: version(n) for n in %r},
                  "cuda": torch.version.cuda, "device": torch.cuda.get_device_name(0) if cuda
                  else "cpu", "memory_gib": round(torch.cuda.get_device_properties(0)
                  .total_memory / 2**30, 1) if cuda else None}))
"""


def step_imports(env, work, budget) -> dict:
    log = work / "imports.log"
    code = IMPORTS % (VERSIONS_OF,)
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=budget)
    log.write_text(res.stdout + res.stderr)
    if res.returncode != 0:
        return {"passed": False, "error": res.stderr[-2000:]}
    return {"passed": True, "s": round(time.perf_counter() - t0, 1),
            **json.loads(res.stdout.strip().splitlines()[-1])}


def step_pytest(env, work, budget, cpu) -> dict:
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                   if "mark.gpu" in p.read_text())
    xml = work / "pytest_gpu.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
           "-m", "gpu", f"--junitxml={xml}", *files]
    rc, secs = run(cmd, env, budget, work / "pytest_gpu.log")
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    if xml.is_file():
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in counts}
    ran = counts["tests"] - counts["skipped"]
    # On the GPU every gpu test must run and pass; on the CPU they skip (the step proves
    # only that they are collected and that the command works).
    passed = rc == 0 and (cpu or (ran > 0 and counts["skipped"] == 0))
    return {"passed": passed, "exit": rc, "s": secs, "files": files, **counts,
            **({} if passed else {"log_tail": tail(work / "pytest_gpu.log")})}


def train_overrides(method: str, cpu: bool, tokenizer: Path, run_dir: Path) -> list[str]:
    common = ["model=qwen3_0_6b", "model.random_init=true", f"model.tokenizer_path={tokenizer}",
              "data=deepmath_103k", f"data.local_path={FIXTURE}", "data.test_size=1",
              f"method={method}", "eval=none", "eval_before=false", "logger=none",
              "train.num_generations=4", "train.prompts_per_step=2",
              "train.gradient_accumulation_steps=1", "train.save_steps=100",
              "train.logging_steps=1", "train.check_frozen=true", f"hydra.run.dir={run_dir}"]
    if cpu:   # a 2-layer Qwen3 of the same vocabulary; TRL's bf16 does not run on the CPU
        return common + ["device=cpu", "train.max_steps=1", "train.max_completion_length=8",
                         "model.dtype=float32", "train.bf16=false",
                         "model.arch.hidden_size=64", "model.arch.num_hidden_layers=2",
                         "model.arch.intermediate_size=128", "model.arch.head_dim=16",
                         "model.arch.num_attention_heads=4", "model.arch.num_key_value_heads=2"]
    dtype = "float32" if method == "fullft" else "bfloat16"   # fullft: fp32 master weights
    return common + ["device=cuda", "train.max_steps=3", "train.max_completion_length=64",
                     f"model.dtype={dtype}", "train.bf16=true"]


def step_train(method, env, work, budget, cpu, tokenizer) -> dict:
    run_dir = work / "runs" / method
    cmd = [sys.executable, "run.py", *train_overrides(method, cpu, tokenizer, run_dir)]
    rc, secs = run(cmd, env, budget, work / f"train_{method}.log")
    results = run_dir / "results.json"
    out = {"exit": rc, "s": secs}
    if results.is_file():
        res = json.loads(results.read_text())
        t = res.get("train", {})
        out.update({k: t.get(k) for k in ("steps", "max_steps", "step_time_s",
                                            "train_runtime_s", "peak_memory_gib",
                                            "trainable_params", "total_params",
                                            "frozen_unchanged", "reward_per_step")},
                   status=res.get("status"), export=res.get("export"),
                   device=res.get("env", {}).get("device"), error=res.get("error"))
    on = (out.get("device") or {}).get("type", "")
    out["passed"] = (rc == 0 and out.get("status") == "finished"
                     and out.get("steps") == out.get("max_steps")
                     and out.get("frozen_unchanged") is not False
                     and on.startswith("cpu" if cpu else "cuda"))
    if not out["passed"]:
        out["log_tail"] = tail(work / f"train_{method}.log")
    return out


# ------------------------------------------------------------------ init worker (subprocess)
def target_shapes(arch: dict) -> list[tuple[str, tuple[int, int]]]:
    """(module name, (out, in)) of every target of `all-linear` for a model config, read
    from the model built on the meta device (no memory, no weights)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from geora.surgery import resolve_targets

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**arch))
    return [(n, tuple(model.get_submodule(n).weight.shape))
            for n in resolve_targets(model, "all-linear")]


def init_worker(device: str, model_conf: str, out_path: str) -> None:
    """Time geora_init (r=16, rho=0.2, the defaults) on every target shape of a model
    config, one random bf16 weight at a time; write the figures to `out_path`."""
    import torch
    import yaml

    from geora.init import geora_init

    arch = yaml.safe_load((ROOT / "conf" / "model" / f"{model_conf}.yaml").read_text())["arch"]
    if device == "cpu":
        torch.set_num_threads(1)
        arch = dict(arch, hidden_size=64, num_hidden_layers=2, intermediate_size=128,
                    head_dim=16, num_attention_heads=4, num_key_value_heads=2)
    shapes = target_shapes(arch)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    gen = torch.Generator(device=device).manual_seed(0)
    times, worst = {}, 0.0
    warm = torch.randn(256, 256, device=device, generator=gen).to(torch.bfloat16)
    geora_init(warm)                       # kernels and the SVD library loaded before timing
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for name, (rows, cols) in shapes:
        w = (0.02 * torch.randn(rows, cols, device=device, generator=gen)).to(torch.bfloat16)
        sync()
        t = time.perf_counter()
        f = geora_init(w)
        sync()
        times.setdefault(name.rsplit(".", 1)[-1], []).append(time.perf_counter() - t)
        if len(times[name.rsplit(".", 1)[-1]]) == 1:   # one check per module type
            back = f.residual.float() + f.scaling * (f.B @ f.A)
            worst = max(worst, float((back - w.float()).abs().max() / w.float().abs().max()))
        del w, f
    total = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    Path(out_path).write_text(json.dumps({
        "model": model_conf if device != "cpu" else f"{model_conf} (toy arch)",
        "matrices": len(shapes), "total_s": round(total, 2), "peak_memory_gib": peak,
        "median_s": {k: round(statistics.median(v), 4) for k, v in times.items()},
        "shapes": {n.rsplit(".", 1)[-1]: s for n, s in shapes},
        "max_rel_reconstruction_error": worst}))


def step_init(env, work, budget, cpu) -> dict:
    out = work / "init.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--init-worker",
           "cpu" if cpu else "cuda", "--out", str(out)]
    rc, secs = run(cmd, env, budget, work / "init.log")
    res = json.loads(out.read_text()) if out.is_file() else {}
    expected = 14 if cpu else 252
    # bf16 residual: W_res + s B A reproduces W up to bf16 rounding (2^-8 relative)
    passed = (rc == 0 and res.get("matrices") == expected
              and res.get("max_rel_reconstruction_error", 1.0) <= 2 ** -7)
    return {"passed": passed, "exit": rc, "s": secs, **res,
            **({} if passed else {"log_tail": tail(work / "init.log")})}


# ---------------------------------------------------------------------------------- main
def write_json(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(record, f, indent=2, default=str)
    os.replace(tmp, path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scripts/gpu_check.py", description=__doc__.split("\n")[0])
    p.add_argument("--wheels", help="folder of the pure-Python wheels the machine lacks "
                                    "(scripts/fetch_gpu_wheels.sh); installed privately")
    p.add_argument("--out", default="gpu_check.json", help="the JSON record")
    p.add_argument("--work", help="working folder (default: a new temporary one)")
    p.add_argument("--cpu-smoke", action="store_true",
                   help="the same steps at toy size on the CPU (no GPU needed)")
    p.add_argument("--steps", default=",".join(STEPS), help=f"subset of {','.join(STEPS)}")
    p.add_argument("--methods", default=",".join(METHODS), help="methods of the train step")
    p.add_argument("--budget-s", type=float, default=None,
                   help="stop starting steps after this many seconds (default 470 on the "
                        "GPU, where the check must end within 8 minutes; 3600 for "
                        "--cpu-smoke on a slow shared CPU)")
    p.add_argument("--init-worker", help=argparse.SUPPRESS)    # internal: cpu | cuda
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.init_worker:
        init_worker(args.init_worker, "qwen3_8b", args.out)
        return 0
    t_start = time.perf_counter()
    if args.budget_s is None:
        args.budget_s = 3600.0 if args.cpu_smoke else 470.0
    try:
        steps = [s for s in args.steps.split(",") if s]
        bad = [s for s in steps if s not in STEPS] + [
            m for m in args.methods.split(",") if m not in METHODS]
        if bad:
            raise BadInput(f"--steps/--methods: unknown {bad[0]!r} (steps {STEPS}, methods "
                           f"{METHODS})")
        wheels = wheel_folder(args.wheels) if args.wheels else None
        import torch
        if not args.cpu_smoke and not torch.cuda.is_available():
            raise BadInput(f"the GPU check needs CUDA, but torch {torch.__version__} sees no "
                           f"CUDA device here (run --cpu-smoke for the CPU rehearsal)")
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu_check-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    site = work / "site"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
           "GEORA_CACHE_DIR": str(work / "cache"),
           "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)] + [
               p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    if args.cpu_smoke:
        env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    record = {"mode": "cpu-smoke" if args.cpu_smoke else "gpu", "started":
              time.strftime("%Y-%m-%dT%H:%M:%S%z"), "work": str(work), "steps": {}}
    out = Path(args.out)

    def left() -> float:
        return args.budget_s - (time.perf_counter() - t_start)

    def save(name, result):
        record["steps"][name] = result
        record["wall_s"] = round(time.perf_counter() - t_start, 1)
        write_json(out, record)
        print(f"{name:>16}: {'passed' if result.get('passed') else 'FAILED'}"
              f" ({result.get('s', '-')} s)", flush=True)

    if "wheels" in steps:
        if wheels is not None:
            save("wheels", install_wheels(wheels, site))
        else:
            missing = missing_modules(env)
            save("wheels", {"passed": not missing, "installed": {},
                            **({"error": f"no --wheels folder and these modules are missing: "
                                         f"{missing}"} if missing else {})})
    if "imports" in steps:
        save("imports", step_imports(env, work, min(300, max(left(), 60))))
        record.update({k: record["steps"]["imports"].get(k)
                       for k in ("device", "memory_gib", "cuda", "python", "versions")})
    if "pytest" in steps:
        save("pytest_gpu", step_pytest(env, work, max(left(), 1), args.cpu_smoke))
    if "init" in steps:
        save("init_qwen3_8b_shapes", step_init(env, work, max(left(), 30), args.cpu_smoke))
    if "train" in steps:
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        from geora.tokenizer_assets import bundled_tokenizer_dir   # (stdlib only)
        tokenizer = bundled_tokenizer_dir("qwen3", cache_dir=env["GEORA_CACHE_DIR"])
        for method in args.methods.split(","):
            if left() < 30:
                save(f"train_{method}", {"passed": False, "error": "not started: budget spent"})
                continue
            save(f"train_{method}", step_train(method, env, work, left(), args.cpu_smoke,
                                               tokenizer))
    failed = [k for k, v in record["steps"].items() if not v.get("passed")]
    record.update(passed=not failed, failed=failed,
                  wall_s=round(time.perf_counter() - t_start, 1))
    write_json(out, record)
    print(f"{'passed' if not failed else 'FAILED: ' + ', '.join(failed)} in "
          f"{record['wall_s']} s; record: {out}", flush=True)
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
