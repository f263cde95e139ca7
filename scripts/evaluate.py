"""Score a model with lm-evaluation-harness and write results.json + per-sample logs.

    python scripts/evaluate.py model=micro eval=micro            # bundled micro model
    python scripts/evaluate.py run_dir=outputs/micro/micro_math/geora/seed0 eval=micro
    python scripts/evaluate.py model=qwen3_8b eval=paper_math eval.backend=vllm device=auto
    python scripts/evaluate.py eval=paper_math eval.data_dir=tests/fixtures/eval eval.limit=2

What is scored: the model of `model` (hub id, local_path, bundled asset, or random_init);
a merged model is a folder, so `model.local_path=DIR`; or a trained run (`run_dir=`),
through its export/ LoRA on the original base (never the residual base) or its adapter/.
Prints in-domain and out-of-domain scores (percent) and where results.json went.
"""
from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

log = logging.getLogger("geora.evaluate")
# As in run.py: conf/hydra/launcher/*.yaml share names with the launchers' schemas.
warnings.filterwarnings("ignore", message=r"(?s).*is validated against ConfigStore schema")


def _run_target(run_dir: Path):
    """(model config, export dir or None, adapter dir or None) of a run folder."""
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"run_dir={str(run_dir)!r} has no config.yaml: not a run folder")
    run_cfg = OmegaConf.load(cfg_path)
    export = run_dir / "export"
    adapter = run_dir / "adapter"
    export = export if (export / "adapter_config.json").is_file() else None
    adapter = adapter if adapter.is_dir() else None
    if export is None and adapter is None:
        raise FileNotFoundError(f"run_dir={str(run_dir)!r} has neither export/ nor adapter/: "
                                f"an unfinished run?")
    return run_cfg.model, export, adapter


def evaluate(cfg: DictConfig, out_dir: str | Path) -> dict[str, float]:
    """Score what `cfg` names; write results into out_dir (or <run_dir>/evaluate/<eval>)."""
    from geora.evaluation import (EvalSettings, build_specs, evaluate_in_memory,
                                  evaluate_pretrained)
    from geora.models import load_model, resolve_device, resolve_model_dir

    # Bad settings, refused code execution and missing data fail here, before any loading.
    build_specs(EvalSettings.from_config(cfg.eval))
    device = resolve_device(str(cfg.device))
    model_cfg, export, adapter = cfg.model, None, None
    if cfg.get("run_dir"):
        run_dir = Path(str(cfg.run_dir)).expanduser().resolve()
        model_cfg, export, adapter = _run_target(run_dir)
        out_dir = run_dir / "evaluate" / str(cfg.eval.name)
    model_dir = resolve_model_dir(model_cfg)  # fails fast on an unreachable hub model
    dtype = str(model_cfg.get("dtype", "float32"))
    if cfg.eval.backend == "vllm":
        if model_dir is None or (adapter is not None and export is None):
            raise ValueError("eval.backend='vllm' needs a model folder (and, for a run, its "
                             "export/ LoRA); this target loads only in memory: eval.backend=hf")
        return evaluate_pretrained(model_dir, cfg.eval, out_dir, adapter_dir=export,
                                   dtype=dtype, device=device)
    if export is None and adapter is None and model_dir is not None:
        # A plain folder (base or merged model): lm-eval's own hf loader.
        return evaluate_pretrained(model_dir, cfg.eval, out_dir, dtype=dtype, device=device)
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
    return evaluate_in_memory(model, tokenizer, cfg.eval, out_dir)


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from geora.evaluation import format_scores

    if not cfg.eval.tasks:
        print(f"eval={cfg.eval.name} has no tasks: nothing to do")
        return
    from geora.evaluation import CodeExecutionRefused, DatasetUnavailableError
    from geora.models import HubUnavailableError

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        scores = evaluate(cfg, out_dir)
    except (CodeExecutionRefused, DatasetUnavailableError, HubUnavailableError,
            FileNotFoundError, ValueError) as e:  # explained in one line: no traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    where = (Path(str(cfg.run_dir)).resolve() / "evaluate" / str(cfg.eval.name)
             if cfg.get("run_dir") else out_dir)
    print(f"== {cfg.eval.name} on {cfg.model.name if not cfg.get('run_dir') else cfg.run_dir} ==")
    print(format_scores(scores, cfg.eval))
    print(f"results: {where / 'results.json'}")


if __name__ == "__main__":
    main()
