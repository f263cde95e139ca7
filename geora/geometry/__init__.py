"""The geometry of a weight update, as pure tensor maths: S_Head readings with chance
levels, NSS, principal angles, update sparsity, mask overlaps (metrics.py), and their
per-run summary (summary.py: results.json["analysis"]). The library's training step
computes them; analysis/ only reads what runs wrote."""
