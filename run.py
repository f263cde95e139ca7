"""Train one method with GRPO (RLVR) and evaluate it; Hydra picks model, data, method, ...

    python run.py                                  # micro model, micro_math, GeoRA, CPU, <= 5 min
    python run.py method=lora train.max_steps=50
    python run.py -m method=geora,pissa,milora     # one run folder per method (multirun/...)
    python run.py -m experiment=micro_all_methods  # the README table
    accelerate launch --config_file conf/accelerate/zero2.yaml run.py model=qwen3_8b \
        data=deepmath_103k train=paper device=auto

Each run folder (outputs/<model>/<data>/<method>/seed<seed>, or the sweep's subfolder) gets
config.yaml, overrides.yaml, train_log.jsonl, checkpoints/, adapter/, export/, evals/before/,
evals/after/ and results.json (the layout: geora.training.rundir.RunFolder). Every numeric
setting is checked before anything loads. Running the same command again resumes an
interrupted run from its last checkpoint and refuses to overwrite a finished one
(train.overwrite=true to start over); a second process in a running folder stops at once,
naming the first. Bad input stops before anything is written; a job that fails after its
run started writes failure.json and results.json (status "failed") into its folder and
re-raises: Hydra's launcher still runs the sweep's other jobs, and the command exits
non-zero. A finished run's results.json is never replaced by a later command's failure.
"""
from __future__ import annotations

import hashlib
import logging
import sys
import warnings

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from geora import config

log = logging.getLogger("geora")
# conf/hydra/launcher/*.yaml share their names with the launchers' registered schemas, which
# Hydra then validates against (as intended) while warning that the matching is deprecated.
warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")  # TRL's own calls
warnings.filterwarnings("ignore", message=r"\s*.hydra/launcher/.* is validated against ConfigStore schema")


def job_dirname(overrides: str, limit: int = 100) -> str:
    """A sweep job's folder name from its overrides: readable, one path level, and at most
    `limit` characters (a long list of overrides ends in a hash of the whole list)."""
    name = overrides.replace("/", "_") or "default"
    if len(name) > limit:
        name = f"{name[:limit - 11]}-{hashlib.sha1(name.encode()).hexdigest()[:10]}"
    return name


OmegaConf.register_new_resolver("job_dirname", job_dirname, replace=True)
config.register()   # the configs' own (model=hf: folder_name)


class RunError(RuntimeError):
    """A failure already explained in one line (bad input, unreachable hub, finished run)."""


def summary(res: dict) -> str:
    t, before, after = res["train"], res.get("eval_before") or {}, res.get("eval") or {}

    def f(x, fmt="{:.3f}"):
        return "n/a" if x is None else fmt.format(x)

    if t is None:  # method=base: the untrained model, evaluated only
        return "\n".join([f"== {res['model']}, untrained (method {res['method']}) ==",
                          *(f"eval {task}: {f(score, '{:.1f}')}" for task, score in after.items()),
                          f"run folder: {res['run_dir']}"])
    lines = [f"== {res['method']} on {res['model']} / {res['data']} (seed {res['seed']}) ==",
             f"steps {t['steps']}  reward first {t.get('reward_window')} steps {f(t['reward_start'])}"
             f" -> last {f(t['reward_end'])}",
             f"trainable params {t['trainable_params']:,} of {t['total_params']:,}"
             f" ({100 * t['trainable_params'] / max(t['total_params'], 1):.2f}%)",
             f"step time {f(t['step_time_s'], '{:.2f}')} s, peak memory {t['peak_memory_gib']:.2f} GiB,"
             f" total time {res['time_s']:.0f} s, frozen tensors unchanged: {t['frozen_unchanged']}"]
    for task in after or before:
        lines.append(f"eval {task}: {f(before.get(task), '{:.1f}')} -> {f(after.get(task), '{:.1f}')}")
    lines.append(f"run folder: {res['run_dir']}")
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from pathlib import Path

    from geora.execution import CodeExecutionRefused
    from geora.models import HubUnavailableError
    from geora.training.checks import check_added_keys
    from geora.training.pipeline import train
    from geora.training.rundir import RunBusyError, RunExistsError

    hc = HydraConfig.get()
    run_dir = hc.runtime.output_dir

    def explained(e: Exception):
        # Bad input / unreachable hub / finished or busy run: one clear line, no traceback. A
        # single run exits at once; in a sweep the exception lets Hydra go on with the others.
        if hc.mode == RunMode.RUN:
            sys.exit(f"error: {type(e).__name__}: {e}")
        log.error(f"{type(e).__name__}: {e}")
        return RunError(f"{type(e).__name__}: {e}")

    # train() records a failure in the folder once its run claimed it (failure.json), and
    # writes nothing for one found before (bad input, a finished or busy folder).
    try:
        check_added_keys(list(hc.overrides.task), Path(__file__).resolve().parent / "conf")
        res = train(cfg, run_dir, overrides=list(hc.overrides.task))
    except (RunExistsError, RunBusyError, HubUnavailableError, CodeExecutionRefused,
            FileNotFoundError, ValueError) as e:
        raise explained(e) from None
    except Exception:
        log.exception(f"run failed; if it started, recorded in {run_dir}/failure.json")
        raise
    if "train" not in res:  # a non-main process of a multi-GPU run
        return None
    print(summary(res), flush=True)
    return res["train"]["reward_end"] if res["train"] else None


if __name__ == "__main__":
    main()
