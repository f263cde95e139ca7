"""GeoRA: geometry-aware low-rank adaptation for RLVR, and its baselines."""
