"""Resuming a run from a Trainer checkpoint: the checkpoint checked before it is read, and a
resume that stops at exactly max_steps.

transformers 5.24's training loop checks max_steps only AFTER an optimizer step (the
DefaultFlowCallback sets should_training_stop in on_step_end), so a run resumed from a
checkpoint already at max_steps (a crash after the last checkpoint, during the final save,
the evaluation or the results write) would train one step more. `StopAtMaxSteps` ends
`trainer.train()` before that step, once the checkpoint's weights, optimizer and state are
loaded (they are, when on_train_begin runs); the pipeline then goes on as after training.

>>> import tempfile, pathlib
>>> ckpt = pathlib.Path(tempfile.mkdtemp()) / "checkpoint-4"
>>> ckpt.mkdir()
>>> _ = (ckpt / "trainer_state.json").write_text('{"global_step": 4}')
>>> checkpoint_step(ckpt), check_checkpoint(ckpt)
(4, None)
>>> _ = (ckpt / "optimizer.pt").write_bytes(b"not a torch file")
>>> check_checkpoint(ckpt)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: checkpoint .../checkpoint-4 is damaged (optimizer.pt: ...); delete that folder to resume from the one before it, or pass train.overwrite=true to start again
"""
from __future__ import annotations

import json
from pathlib import Path

from transformers import TrainerCallback


class AtMaxSteps(Exception):
    """Raised by StopAtMaxSteps: the checkpoint resumed from already reached max_steps."""


class StopAtMaxSteps(TrainerCallback):
    """Ends trainer.train() before its first step when the loaded state is at max_steps."""

    def on_train_begin(self, args, state, control, **kwargs):
        if state.max_steps > 0 and state.global_step >= state.max_steps:
            raise AtMaxSteps(state.global_step)


def checkpoint_step(path: str | Path) -> int:
    """The global step a (complete) checkpoint folder was saved at."""
    return int(json.loads((Path(path) / "trainer_state.json").read_text())["global_step"])


def check_checkpoint(path: str | Path) -> None:
    """Read every file of checkpoint `path` the way the Trainer will (JSON, safetensors
    headers and sizes, torch pickles memory-mapped); ValueError naming the checkpoint and
    the file when one is damaged (truncated, overwritten, random bytes)."""
    import torch
    from safetensors import safe_open

    path = Path(path)
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        try:
            if f.suffix == ".json":
                json.loads(f.read_text(encoding="utf-8"))
            elif f.suffix == ".safetensors":
                with safe_open(str(f), framework="pt") as st:   # checks header and size
                    for name in st.keys():
                        st.get_slice(name)
            elif f.suffix in (".pt", ".pth", ".bin"):
                # our own files (optimizer, scheduler, RNG states): numpy arrays inside
                torch.load(f, map_location="cpu", mmap=True, weights_only=False)
        except Exception as e:  # any reader's error means the file cannot be resumed from
            raise ValueError(f"checkpoint {path} is damaged ({f.relative_to(path)}: "
                             f"{type(e).__name__}: {str(e)[:200]}); delete that folder to "
                             f"resume from the one before it, or pass train.overwrite=true "
                             f"to start again") from None
