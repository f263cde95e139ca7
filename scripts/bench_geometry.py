"""The geometry callback's cost (analysis.track_every), measured inside one real GRPO run.

    python scripts/bench_geometry.py --out /tmp/geo_micro -- method=fullft train.max_steps=40
    python scripts/bench_geometry.py --out /tmp/geo_h768 -- method=fullft train.max_steps=8 \
        model.bundled=null model.random_init=true model.arch.hidden_size=768 \
        model.arch.intermediate_size=2048 model.arch.head_dim=64 \
        model.arch.num_attention_heads=12 model.arch.num_key_value_heads=4

Runs `geora.training.pipeline.train` (TRL's GRPOTrainer, this project's defaults, no
evaluation, no end-of-run analysis, no checkpoints) with the callback every --every steps,
then reads the cost from the run's own files (analysis.premise.geometry_cost): the median
time of one record and the one-time setup (W0's head; for FullFT / SparseFT every method's
initial subspace), against the run's median step time (the step timer stops before the
callback runs, so both come from the same steps of the same run). It prints the share at
--at (default 10, the micro default) and the setup's share of a 200-step run.

A random-initialised model earns reward 0 on the task data, so its update would be exactly
zero and the callback would take its zero-update shortcut: --length-reward (the default)
adds a reward that varies within each group (completion length / 48) so that every step
moves the weights. That reward changes what is learned, not what one step or one record
costs. Not a unit test: minutes of CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def length_reward(completions, **_):
    """Completion length / 48 (the micro max_completion_length): varies within a group."""
    from geora.rewards import completion_text

    return [len(completion_text(c)) / 48.0 for c in completions]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="the run folder (replaced)")
    p.add_argument("--every", type=int, default=2, help="analysis.track_every of the run")
    p.add_argument("--at", type=int, default=10, help="the N the cost is reported at")
    p.add_argument("--no-length-reward", dest="length", action="store_false")
    p.add_argument("overrides", nargs="*", help="run.py overrides (after --)")
    args = p.parse_args(argv)

    from hydra import compose, initialize_config_dir

    from analysis.premise import geometry_cost
    from geora import rewards
    from geora.training.pipeline import train

    extra = ["eval=none", "eval_before=false", "analysis.enabled=false", "train.save_steps=100000",
             f"analysis.track_every={args.every}", "train.overwrite=true"]
    if args.length:
        rewards.REWARDS["bench_length"] = length_reward
        extra.append("train.rewards=[bench_length]")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=extra + list(args.overrides))
    load = os.getloadavg()
    train(cfg, args.out)
    cost = geometry_cost(args.out, args.at)
    cost.update(load_before=[round(x, 2) for x in load],
                load_after=[round(x, 2) for x in os.getloadavg()],
                uptime=subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
                overrides=list(args.overrides), length_reward=args.length)
    print(json.dumps(cost, indent=1))


if __name__ == "__main__":
    main()
