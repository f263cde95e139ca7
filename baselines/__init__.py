"""Comparison methods (LoRA, PiSSA, MiLoRA, DoRA, AdaLoRA, SparseFT, FullFT).

Each module holds one method's own part (its factors, its PEFT config, or its mask) and
imports only layer 1 (geora.linalg, geora.init) and the libraries; `geora.methods` is the
one registry that maps names to them and `geora.surgery` applies them to a model.
"""
