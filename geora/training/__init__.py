"""GRPO training of every method: the pipeline (pipeline.train), TRL wrapper (grpo), rewards
registry (rewards), run folder (rundir). `python run.py` is the entry point."""
