"""GRPO training of every method: the pipeline (pipeline.train), TRL wrapper (grpo), run folder
(rundir); the rewards registry is geora.rewards (evaluation reads it too). `python run.py` is the entry point."""
