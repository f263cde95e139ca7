"""Data: the synthetic micro tasks (micro.py) and loaders for real RLVR data sets (loaders.py)."""
