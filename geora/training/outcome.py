"""What a training run's record reads besides the Trainer's own numbers: whether the frozen
tensors (the base weights, or W_res) stayed bitwise unchanged, and the mean reward at the
start and the end of training.

>>> reward_windows([{"step": s, "reward": float(s)} for s in range(1, 11)])["reward_end"]
10.0
"""
from __future__ import annotations

import torch


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
