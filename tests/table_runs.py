"""Synthetic run folders for the table tests, written through the real RunFolder API in the
current results.json schema (geora/training/pipeline.py) with a resolved config.yaml."""
from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from geora.training.rundir import RunFolder

H200 = {"type": "cuda", "name": "NVIDIA H200", "count": 1}


def write_run(root: Path, method: str, seed: int, scores: dict | None = None, *, lr: float = 1e-4,
              model: str = "qwen3_8b", data: str = "deepmath_103k", train: dict | None = None,
              before: dict | None = None, status: str = "finished", analysis: dict | None = None,
              device: dict | None = H200, config: dict | None = None, name: str | None = None) -> RunFolder:
    """One run folder under root/<model>/<data>/<name or method_lr>/seed<seed>. `config`
    entries ({"eval.limit": 2}) override the resolved config's dotted keys."""
    run = RunFolder(root / model / data / (name or f"{method}_lr{lr:g}") / f"seed{seed}")
    cfg = OmegaConf.create({
        "seed": seed, "device": "auto", "run_name": "x",
        "model": {"name": model, "dtype": "bfloat16"}, "data": {"name": data, "train_size": None},
        "method": {"name": method, "rank": 16, "rho": 0.2, "learning_rate": 1e-3},
        "train": {"learning_rate": lr, "max_steps": 500, "max_completion_length": 4096},
        "eval": {"name": "paper_math", "tasks": ["aime24"], "limit": None, "seed": 0, "repeats": None},
        "logger": {"name": "none"}})
    for key, value in (config or {}).items():
        OmegaConf.update(cfg, key, value, force_add=True)
    run.write_config(cfg)
    if status != "finished":
        run.write_results({"status": status, "error_type": "RuntimeError", "error": "CUDA out of memory",
                           "method": method, "model": model, "seed": seed, "time": "2026-01-01T00:00:00"})
        return run
    record = {"status": "finished", "method": method, "model": model, "data": data, "seed": seed,
              "run_dir": str(run.path),
              "train": {"steps": 500, "reward_start": 0.2, "reward_end": 0.5, "reward_per_step": [0.2, 0.5],
                        "step_time_s": 1.0, "peak_memory_gib": 10.0, "trainable_params": 43_646_976,
                        "total_params": 8_234_382_336, **(train or {})},
              "eval_before": before if before is not None else {"aime24": 13.33},
              "eval": scores or {}, "adapter": "adapter", "export": "export", "time_s": 1.0,
              "env": {"packages": {}, "python": "3.11", **({"device": device} if device else {})}}
    if analysis is not None:
        record["analysis"] = analysis
    run.write_results(record)
    return run
