"""`python tests/fault_run.py PHASE run.py-overrides...`: run.py, killed (os._exit, no
cleanup, as SIGKILL would) at one phase of the run, for tests/test_reliability.py.

PHASE: none (runs to the end), step (inside the 3rd optimizer step's reward), checkpoint
(checkpoint-4 written but for its trainer_state.json), save (the adapter's temporary folder
half written), evaluation (the after-training evaluation's temporary folder made), results
(results.json written under its temporary name, not yet renamed).

A deterministic reward that varies with the completion (its length) is registered as
`test_length`, so that GRPO's advantages are non-zero and the weights move.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
KILLED = 86   # the exit status of a run killed here
PHASES = ("none", "step", "checkpoint", "save", "evaluation", "results")


def kill() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(KILLED)


def install(phase: str) -> None:
    import geora.fileio
    import geora.persistence
    from geora.evaluation import harness
    from geora import rewards
    from transformers import trainer_callback

    if phase not in PHASES:
        raise SystemExit(f"unknown phase {phase!r}; choose from {PHASES}")
    calls = []

    def length_reward(completions, **_):
        calls.append(1)
        if phase == "step" and len(calls) == 3:
            kill()
        return [len(rewards.completion_text(c)) / 10.0 for c in completions]

    rewards.REWARDS["test_length"] = length_reward
    if phase == "checkpoint":
        save_to_json = trainer_callback.TrainerState.save_to_json

        def dying_save(self, path):
            if "checkpoint-4" in str(path):
                kill()
            save_to_json(self, path)
        trainer_callback.TrainerState.save_to_json = dying_save
    elif phase == "save":
        write_json = geora.persistence.atomic_write_json

        def dying_write(path, *args, **kwargs):
            write_json(path, *args, **kwargs)
            if Path(path).name == geora.persistence.META_FILE:
                kill()
        geora.persistence.atomic_write_json = dying_write
    elif phase == "evaluation":
        def dying_results(out_dir, *args, **kwargs):
            (Path(out_dir) / "partial").write_text("killed here\n")
            kill()
        harness.write_results = dying_results
    elif phase == "results":
        replace = os.replace

        def dying_replace(src, dst, *args, **kwargs):
            if Path(dst).name == "results.json":
                kill()
            return replace(src, dst, *args, **kwargs)
        geora.fileio.os = type(sys)("os_with_a_dying_replace")
        geora.fileio.os.__dict__.update(os.__dict__, replace=dying_replace)


if __name__ == "__main__":
    install(sys.argv[1])
    sys.argv = [str(ROOT / "run.py"), *sys.argv[2:]]
    import runpy

    runpy.run_path(str(ROOT / "run.py"), run_name="__main__")
