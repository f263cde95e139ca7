"""One RLVR experiment, config in, metrics out: `train(cfg, run_dir) -> results dict`.

    load model + data -> [evaluate before] -> geora.prepare_model(method) -> GRPO (TRL)
    -> save adapter + export -> evaluate -> results.json

`run.py` wraps this in @hydra.main; tests call it directly with a composed config. The run
folder's life cycle (rundir.py): a new folder starts a run; a folder with checkpoints but no
results.json resumes from its last checkpoint (same config required); a finished one is
refused unless `train.overwrite=true`. Residual methods are re-prepared from the seed before
a checkpoint is loaded, so W_res (which no checkpoint stores) is the same bits as before.
"""
from __future__ import annotations

import logging
import os
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from geora.fileio import atomic_write_json, atomic_write_text
from geora.models import resolve_device
from geora.training import rundir as rd

log = logging.getLogger(__name__)

# Keys that may differ between the first start of a run and its resumption.
RESUME_FREE_KEYS = ("train.overwrite", "train.resume", "device", "logger")


def _comparable(cfg: DictConfig) -> dict:
    c = OmegaConf.to_container(cfg, resolve=True)
    for key in RESUME_FREE_KEYS:
        head, _, leaf = key.rpartition(".")
        node = c.get(head, {}) if head else c
        if isinstance(node, dict):
            node.pop(leaf, None)
    return c


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix[:-1]}: {a!r} -> {b!r}"]


def prepare_run_dir(cfg: DictConfig, run_dir: Path) -> str | None:
    """Checks the folder's state against the config; returns the checkpoint to resume or None.

    Raises RunExistsError for a finished run (no overwrite) or a config that changed."""
    from transformers.trainer_utils import get_last_checkpoint

    state = rd.run_state(run_dir)
    if state == "finished":
        if not cfg.train.overwrite:
            raise rd.RunExistsError(
                f"{run_dir} holds a finished run (results.json). Refusing to overwrite it: pass "
                f"train.overwrite=true to start again, or choose another run_name / hydra.run.dir")
        rd.clear_run(run_dir)
        state = "new"
    elif cfg.train.overwrite and state != "new":
        rd.clear_run(run_dir)
        state = "new"
    if state != "new" and not (run_dir / "config.yaml").is_file():
        state = "new"  # a run that failed before it wrote its config: nothing to resume
    if state != "new":
        old = OmegaConf.load(run_dir / "config.yaml")
        changed = _diff(_comparable(old), _comparable(cfg))
        if changed:
            raise rd.RunExistsError(
                f"{run_dir} holds an unfinished run with another config ({'; '.join(changed[:5])}). "
                f"Pass train.overwrite=true to discard it, or choose another run_name")
        for name in ("results.json", "failure.json"):  # a failed run is being retried
            (run_dir / name).unlink(missing_ok=True)
    ckpt_dir = run_dir / "checkpoints"
    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    if cfg.train.resume not in ("auto", "never"):
        raise ValueError(f"train.resume={cfg.train.resume!r}: choose auto or never")
    if last and cfg.train.resume == "never":
        raise rd.RunExistsError(f"{run_dir} has checkpoints but train.resume=never; "
                                f"pass train.overwrite=true to start again")
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    return last


def frozen_snapshot(model) -> dict[str, torch.Tensor]:
    """Copies of every frozen parameter (the base / W_res), to check they never move."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}


def frozen_unchanged(model, snapshot: dict[str, torch.Tensor]) -> bool:
    params = dict(model.named_parameters())
    return all(n in params and torch.equal(params[n].detach(), t) for n, t in snapshot.items())


def reward_windows(log: list[dict], share: float = 0.1) -> dict:
    """Mean training reward over the first and last `share` of logged steps (at least one)."""
    per_step = {}
    for rec in log:
        if "reward" in rec and rec.get("step") is not None:
            per_step[int(rec["step"])] = float(rec["reward"])
    rewards = [per_step[s] for s in sorted(per_step)]
    if not rewards:
        return {"reward_start": None, "reward_end": None, "reward_per_step": []}
    k = max(1, int(round(share * len(rewards))))
    return {"reward_start": sum(rewards[:k]) / k, "reward_end": sum(rewards[-k:]) / k,
            "reward_window": k, "reward_per_step": rewards}


def _evaluate(model, tokenizer, cfg: DictConfig, out_dir: Path) -> dict[str, float]:
    if not cfg.eval.get("tasks"):
        return {}
    from geora.evaluation import evaluate_in_memory

    was_training = model.training
    model.eval()
    try:
        return {k: float(v) for k, v in evaluate_in_memory(model, tokenizer, cfg.eval, str(out_dir)).items()}
    finally:
        model.train(was_training)


def _method_kwargs(method: DictConfig) -> dict:
    kw = {k: method[k] for k in ("rank", "rho", "alpha", "target_modules") if method.get(k) is not None}
    if method.get("options"):
        kw.update(OmegaConf.to_container(method.options, resolve=True))
    return kw


def train(cfg: DictConfig, run_dir: str | Path, overrides: list[str] | None = None) -> dict:
    """Runs one experiment in `run_dir` and returns what it writes to results.json.
    `overrides` (the command line's, from run.py) are kept in overrides.yaml."""
    import geora
    from transformers import set_seed

    from geora.data.loaders import load_data
    from geora.models import load_model
    from geora.training.grpo import StepStats, build_trainer

    t_start = time.time()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(str(cfg.device))
    if device == "cpu" and cfg.get("cpu_threads"):
        torch.set_num_threads(int(cfg.cpu_threads))
    last_ckpt = prepare_run_dir(cfg, run_dir)
    if overrides is not None:
        atomic_write_text(run_dir / "overrides.yaml", OmegaConf.to_yaml(list(overrides)))
    if cfg.logger.get("mode"):
        os.environ.setdefault("WANDB_MODE", str(cfg.logger.mode))
        os.environ.setdefault("WANDB_PROJECT", str(cfg.logger.project))
        os.environ.setdefault("WANDB_DIR", str(run_dir))

    if cfg.method.name == "fullft" and str(cfg.model.dtype) in ("bfloat16", "bf16", "float16", "fp16"):
        log.warning("fullft on %s weights: AdamW steps of lr %s are mostly rounded away in 16-bit; "
                    "model.dtype=float32 keeps fp32 master weights (train.bf16=true autocasts)",
                    cfg.model.dtype, cfg.train.learning_rate)
    set_seed(int(cfg.seed))
    model, tokenizer = load_model(cfg.model, device=device)
    train_ds, _test_ds = load_data(cfg.data)

    before_path = run_dir / "eval_before.json"
    eval_before = rd.read_json(before_path) if last_ckpt else None
    # Under `accelerate launch` every process runs this function; only the main one
    # evaluates and writes the run's files (the Trainer itself saves checkpoints once).
    main = int(os.environ.get("RANK", "0")) == 0
    if main and eval_before is None and cfg.eval_before and cfg.eval.get("tasks"):
        eval_before = _evaluate(model, tokenizer, cfg, run_dir / "eval_before")
        atomic_write_json(before_path, eval_before)

    # Deterministic preparation (seeded SVDs / masks): a resumed run rebuilds the same W_res.
    torch.manual_seed(int(cfg.seed))
    model = geora.prepare_model(model, str(cfg.method.name), **_method_kwargs(cfg.method))
    trainable, total = geora.count_parameters(model)
    snapshot = frozen_snapshot(model) if cfg.train.get("check_frozen") else None

    stats = StepStats()
    trainer = build_trainer(model, tokenizer, train_ds, cfg.train,
                            output_dir=str(run_dir / "checkpoints"), seed=int(cfg.seed),
                            device=device, report_to=list(cfg.logger.report_to),
                            callbacks=[rd.JsonlLogCallback(run_dir / "train_log.jsonl"), stats])
    out = trainer.train(resume_from_checkpoint=last_ckpt)
    model = trainer.model
    unchanged = frozen_unchanged(model, snapshot) if snapshot is not None else None
    if hasattr(model, "peft_config") and "ref" in model.peft_config:
        model.delete_adapter("ref")  # TRL's frozen KL-reference copy: not part of the result
    if not main:
        return {"status": "finished", "rank": int(os.environ["RANK"])}

    # Both write into a temporary sibling folder and rename it when complete (atomic).
    geora.save_adapter(model, run_dir / "adapter", overwrite=True)
    try:
        geora.export_lora(model, run_dir / "export", overwrite=True)
        export = "export"
    except ValueError as e:  # sparseft / fullft have no low-rank form
        export = f"none: {e}"

    eval_after = _evaluate(model, tokenizer, cfg, run_dir / "eval")
    train_log = rd.read_log(run_dir / "train_log.jsonl")
    times = sorted(stats.step_times)
    results = {
        "status": "finished",
        "method": str(cfg.method.name), "model": str(cfg.model.name), "data": str(cfg.data.name),
        "seed": int(cfg.seed), "run_dir": str(run_dir),
        "train": {
            "steps": int(out.global_step), "max_steps": int(cfg.train.max_steps),
            "resumed_from": last_ckpt, **reward_windows(train_log),
            "step_time_s": times[len(times) // 2] if times else None,
            "train_runtime_s": float(out.metrics.get("train_runtime", 0.0)),
            "peak_memory_gib": StepStats.peak_memory_gib(device),
            "trainable_params": int(trainable), "total_params": int(total),
            "frozen_unchanged": unchanged,
        },
        "eval_before": eval_before or {}, "eval": eval_after,
        "adapter": "adapter", "export": export,
        "time_s": time.time() - t_start,
        "env": rd.env_info(device),
    }
    atomic_write_json(run_dir / "results.json", results)
    return results


def record_failure(run_dir: str | Path, cfg: DictConfig, exc: BaseException) -> None:
    """failure.json (error and traceback) and results.json with status "failed"."""
    run_dir = Path(run_dir)
    info = {"status": "failed", "error_type": type(exc).__name__, "error": str(exc),
            "method": str(cfg.method.name), "model": str(cfg.model.name), "seed": int(cfg.seed),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write_json(run_dir / "failure.json",
                         {**info, "traceback": traceback.format_exception(exc)})
    atomic_write_json(run_dir / "results.json", info)
