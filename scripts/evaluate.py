"""Score a model with lm-evaluation-harness and write its summary + per-sample logs.

    python scripts/evaluate.py model=micro eval=micro            # bundled micro model
    python scripts/evaluate.py run_dir=outputs/micro/micro_math/geora/seed0 eval=micro
    python scripts/evaluate.py model=qwen3_8b eval=paper_math eval.backend=vllm device=auto
    python scripts/evaluate.py eval=paper_math eval.data_dir=tests/fixtures/eval eval.limit=2

What is scored: the model of `model` (hub id, local_path, bundled asset, or random_init);
a merged model is a folder, so `model.local_path=DIR`; or a trained run (`run_dir=`),
through its export/ LoRA on the original base (never the residual base) or its adapter/;
a Base-row record (method "base") is its untrained model. The run's model config replaces
`model` (its chat mode, model.enable_thinking, is the one scored).
A run's evaluation is recorded in the run folder, evals/<eval.name>/ (written whole or not
at all), where `python -m analysis.tables` finds it. An evaluation is never silently
replaced: a limited one (eval.limit=N) goes beside the complete one, to
evals/<eval.name>-limit<N>/, and one whose settings differ from those of the evaluation
already in its folder (other tasks, max_gen_toks, generation settings, ...) is refused
unless eval.overwrite=true. Prints in-domain and out-of-domain
scores (percent) and where the summary (eval_results.json) went.
"""
from __future__ import annotations

import copy
import logging
import sys
import warnings
from pathlib import Path

import hydra
from omegaconf import DictConfig, open_dict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

from geora import config  # noqa: E402
from geora.evaluation.harness import SUMMARY_FILE  # noqa: E402
from geora.training.rundir import AFTER, BASE_METHOD, BEFORE, RunFolder, read_json  # noqa: E402

config.register()
log = logging.getLogger("geora.evaluate")
# As in run.py: conf/hydra/launcher/*.yaml share names with the launchers' schemas.
warnings.filterwarnings("ignore", message=r"(?s).*is validated against ConfigStore schema")


def _run_target(run: RunFolder):
    """(model config, export dir or None, adapter dir or None) of a run folder; a Base-row
    record (results.json method "base": the untrained model) has neither."""
    run_cfg = run.read_config()
    if run_cfg is None:
        raise FileNotFoundError(f"run_dir={str(run.path)!r} has no {RunFolder.CONFIG}: not a "
                                f"run folder")
    if (run.read_results() or {}).get("method") == BASE_METHOD:
        return run_cfg.model, None, None
    export = run.export if (run.export / "adapter_config.json").is_file() else None
    adapter = run.adapter if run.adapter.is_dir() else None
    if export is None and adapter is None:
        raise FileNotFoundError(f"run_dir={str(run.path)!r} has neither {RunFolder.EXPORT}/ "
                                f"nor {RunFolder.ADAPTER}/: an unfinished run?")
    return run_cfg.model, export, adapter


def run_folder(cfg: DictConfig) -> RunFolder | None:
    """The run folder named by run_dir=, or None when a plain model is scored."""
    if not cfg.get("run_dir"):
        return None
    run = RunFolder(Path(str(cfg.run_dir)).expanduser().resolve())
    if str(cfg.eval.name) in (BEFORE, AFTER):
        raise ValueError(f"eval.name={cfg.eval.name!r} is reserved for the evaluations of "
                         f"training in {run.path / RunFolder.EVALS}; name the eval config "
                         f"otherwise")
    return run


# Evaluation settings that do not change the scores (as analysis.runs.IGNORED_SETTINGS).
NOT_SCORED = ("name", "in_domain", "batch_size", "log_samples", "num_threads", "data_dir")


def evaluation_name(cfg: DictConfig) -> str:
    """The folder under the run's evals/: eval.name, with -limit<N> for a limited evaluation
    (beside the complete one, never in its place)."""
    limit = cfg.eval.get("limit")
    return f"{cfg.eval.name}-limit{limit}" if limit is not None else str(cfg.eval.name)


def check_replaceable(run: RunFolder, name: str, settings, overwrite: bool) -> None:
    """ValueError when evals/<name> holds an evaluation with other settings (and overwrite
    is off), naming what differs."""
    summary = read_json(run.evaluation(name) / SUMMARY_FILE)
    if summary is None or overwrite:
        return
    old, new = summary.get("eval") or {}, settings.as_dict()
    changed = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
               if k not in NOT_SCORED and old.get(k) != new.get(k)]
    if changed:
        raise ValueError(f"{run.evaluation(name)} holds an evaluation with other settings "
                         f"({'; '.join(changed[:5])}); pass eval.overwrite=true to replace it, "
                         f"or give this one another eval.name")


def evaluate(cfg: DictConfig, out_dir: str | Path) -> dict[str, float]:
    """Score what `cfg` names; write results into out_dir (or the run's evals/, see
    evaluation_name and check_replaceable)."""
    from geora.config import ModelConfig
    from geora.evaluation import EvalSettings, build_specs
    from geora.models import resolve_device

    overwrite = bool(cfg.eval.get("overwrite", False))
    run = run_folder(cfg)
    if run is not None:   # the run's own model replaces `model`, also where eval reads it
        model_cfg, export, adapter = _run_target(run)
        cfg = copy.deepcopy(cfg)   # (eval.enable_thinking interpolates model.enable_thinking)
        with open_dict(cfg):
            cfg.model = model_cfg
    # Bad settings, refused code execution and missing data fail here, before any loading;
    # what follows reads the checked, typed sections.
    settings, model = EvalSettings.from_config(cfg.eval), ModelConfig.of(cfg.model)
    build_specs(settings)
    device = resolve_device(str(cfg.device))
    if run is None:
        return _score(settings, model, None, None, out_dir, device)
    with run.locked():   # not while a training run (or another evaluation) writes there
        check_replaceable(run, evaluation_name(cfg), settings, overwrite)
        with run.new_evaluation(evaluation_name(cfg)) as tmp:   # replaced only when complete
            return _score(settings, model, export, adapter, tmp, device)


def _score(settings, model_cfg, export: Path | None, adapter: Path | None,
           out_dir: str | Path, device: str) -> dict[str, float]:
    from geora.evaluation import evaluate_in_memory, evaluate_pretrained
    from geora.models import load_model, resolve_model_dir

    model_dir = resolve_model_dir(model_cfg)  # fails fast on an unreachable hub model
    from geora.models import dtype_name

    dtype = dtype_name(model_cfg)
    if settings.backend == "vllm":
        if model_dir is None or (adapter is not None and export is None):
            raise ValueError("eval.backend='vllm' needs a model folder (and, for a run, its "
                             "export/ LoRA); this target loads only in memory: eval.backend=hf")
        return evaluate_pretrained(model_dir, settings, out_dir, adapter_dir=export,
                                   dtype=dtype, device=device)
    if export is None and adapter is None and model_dir is not None:
        # A plain folder (base or merged model): lm-eval's own hf loader.
        return evaluate_pretrained(model_dir, settings, out_dir, dtype=dtype, device=device)
    model, tokenizer = load_model(model_cfg, device=device)
    if export is not None:
        # PEFT's loader on the original base, in memory: lm-eval's `peft=` route would also
        # resize the embeddings to the tokenizer's length (512 -> 502 rows for the micro
        # model), changing the model it scores.
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(export))
    elif adapter is not None:  # methods with no LoRA form (sparseft, fullft)
        import geora

        model = geora.load_adapter(model, adapter)
    return evaluate_in_memory(model, tokenizer, settings, out_dir)


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from geora.evaluation import format_scores

    if not cfg.eval.tasks:
        print(f"eval={cfg.eval.name} has no tasks: nothing to do")
        return
    from geora.evaluation import CodeExecutionRefused, DatasetUnavailableError
    from geora.models import HubUnavailableError
    from geora.training.rundir import RunBusyError

    from geora.training.checks import check_added_keys

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:   # (a misspelt `+eval.limt=2` would otherwise be ignored)
        check_added_keys(list(HydraConfig.get().overrides.task), Path(__file__).parents[1] / "conf")
        scores = evaluate(cfg, out_dir)
    except (CodeExecutionRefused, DatasetUnavailableError, HubUnavailableError, RunBusyError,
            FileNotFoundError, ValueError) as e:  # explained in one line: no traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    run = run_folder(cfg)
    where = run.evaluation(evaluation_name(cfg)) if run is not None else out_dir
    print(f"== {cfg.eval.name} on {cfg.model.name if run is None else cfg.run_dir} ==")
    print(format_scores(scores, cfg.eval))
    print(f"results: {where / SUMMARY_FILE}")


if __name__ == "__main__":
    main()
