"""Which checkpoint a real model loads: `checkpoint=base` (the default, the pretrained
checkpoints the paper's Base row matches; docs/protocol.md) or `checkpoint=post`, each with
the prompt format and stop tokens it needs.

    .venv/bin/python -m pytest -q -p no:xdist tests/test_checkpoints.py
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from geora.models import add_stop_tokens, load_model
from tests.conftest import compose_run as make

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:.*is validated against ConfigStore schema")
# Qwen3-8B's architecture shrunk to one tiny layer, random weights, the real Qwen3 tokenizer.
SHRUNK = ["model.random_init=true", "model.tokenizer_path=bundled:qwen3", "model.dtype=float32",
          "model.arch.hidden_size=32", "model.arch.num_hidden_layers=1",
          "model.arch.num_attention_heads=2", "model.arch.num_key_value_heads=1",
          "model.arch.head_dim=16", "model.arch.intermediate_size=64"]


def test_cfg_job_shows_the_checkpoint_the_evidence_chose():
    def job(*extra):
        p = subprocess.run([sys.executable, str(ROOT / "run.py"), "experiment=paper_main_qwen3_8b",
                            "method=geora", *extra, "--cfg", "job"], capture_output=True, text=True,
                           timeout=120, cwd=ROOT)
        assert p.returncode == 0, p.stderr[-2000:]
        return p.stdout

    def model(text):
        m = yaml.safe_load(text)["model"]
        return m["name"], m["family"], m["hub_id"]

    base, post = job(), job("checkpoint=post")
    assert model(base) == ("qwen3_8b_base", "base", "Qwen/Qwen3-8B-Base")
    assert model(post) == ("qwen3_8b", "post", "Qwen/Qwen3-8B")


@pytest.fixture(scope="module")
def loaded():
    """{checkpoint: (shrunk Qwen3-8B model, the real Qwen3 tokenizer)} as load_model gives them."""
    return {c: load_model(make("model=qwen3_8b", f"checkpoint={c}", *SHRUNK).model)
            for c in ("base", "post")}


def test_a_pretrained_qwen_stops_at_im_end_as_well_as_its_eos(loaded):
    """Through ChatML a pretrained Qwen closes its answer with <|im_end|>, which is not its
    eos: the loaded model stops there (TRL's rollouts read generation_config.eos_token_id)."""
    base, post = loaded["base"], loaded["post"]
    model, tok = base
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert list(make("model=qwen3_8b").model.stop_tokens) == ["<|im_end|>"]
    assert im_end in model.generation_config.eos_token_id
    # ... and vLLM rollouts get the same stops (TRL passes only generation_kwargs to vLLM)
    from geora.training.grpo import vllm_stop_kwargs

    assert im_end in vllm_stop_kwargs(model.generation_config)["stop_token_ids"]
    assert not make("model=qwen3_8b", "checkpoint=post").model.get("stop_tokens")
    assert im_end not in ([post[0].generation_config.eos_token_id]
                          if isinstance(post[0].generation_config.eos_token_id, int)
                          else post[0].generation_config.eos_token_id or [])


def test_an_unknown_stop_token_is_named(loaded):
    model, tok = loaded["post"]
    with pytest.raises(ValueError, match=r"^model.stop_tokens: '<\|nope\|>' \(model 'm'\) is not a token"):
        add_stop_tokens(model, tok, ["<|nope|>"], "m")


@pytest.mark.parametrize("size,hub_id,prompt_format", [
    ("qwen3_1_7b", "Qwen/Qwen3-1.7B-Base", "chat"), ("qwen3_4b", "Qwen/Qwen3-4B-Base", "chat"),
    ("qwen3_8b", "Qwen/Qwen3-8B-Base", "chat"), ("qwen3_14b", "Qwen/Qwen3-14B-Base", "chat"),
    ("qwen2_5_1_5b", "Qwen/Qwen2.5-1.5B", "chat"), ("llama3_1_8b", "meta-llama/Llama-3.1-8B", "plain"),
])
def test_the_base_checkpoints_and_their_prompt_formats(size, hub_id, prompt_format):
    cfg = make(f"model={size}")
    assert (cfg.model.hub_id, cfg.model.prompt_format, cfg.model.enable_thinking) == (
        hub_id, prompt_format, None)
    assert cfg.eval.apply_chat_template == prompt_format   # the evaluation follows it


def test_an_unknown_family_is_named_in_one_line(tmp_path):
    from geora.training.settings import RunSettings

    with pytest.raises(ValueError, match=r"^model.family='instruct' \(model 'qwen3_8b_base'\): "
                                         r"choose one of base, post"):
        RunSettings.from_config(make("model=qwen3_8b", "model.family=instruct"))
    p = subprocess.run([sys.executable, str(ROOT / "run.py"), "model=qwen3_8b", "checkpoint=instruct",
                        f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path)
    assert p.returncode != 0 and "Could not find 'checkpoint/instruct'" in p.stderr.splitlines()[0]
    assert not any(tmp_path.iterdir())
