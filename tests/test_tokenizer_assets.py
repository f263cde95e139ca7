"""The bundled Qwen3 tokenizer: unpacks once and atomically, loads with AutoTokenizer, and
renders Qwen3's chat template in both thinking modes."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from geora.tokenizer_assets import BUNDLED, bundled_tokenizer_dir, resolve_tokenizer_path

MESSAGES = [{"role": "user", "content": "What is 1 + 1?"}]


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory):
    from transformers import AutoTokenizer

    folder = bundled_tokenizer_dir("qwen3", cache_dir=tmp_path_factory.mktemp("cache"))
    return AutoTokenizer.from_pretrained(folder)


def test_loads_as_the_real_qwen3_tokenizer(qwen3):
    assert len(qwen3) == 151669
    assert (qwen3.eos_token, qwen3.pad_token) == ("<|im_end|>", "<|endoftext|>")
    assert qwen3.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>", "<think>", "</think>"]) \
        == [151644, 151645, 151667, 151668]


def test_chat_template_in_both_modes(qwen3):
    render = lambda **kw: qwen3.apply_chat_template(MESSAGES, tokenize=False,  # noqa: E731
                                                    add_generation_prompt=True, **kw)
    head = "<|im_start|>user\nWhat is 1 + 1?<|im_end|>\n<|im_start|>assistant\n"
    assert render(enable_thinking=False) == head + "<think>\n\n</think>\n\n"
    assert render(enable_thinking=True) == head       # the model opens its own <think>
    assert render() == head                           # Qwen3 thinks unless told not to


def test_chat_template_is_qwen3_8b_current_revision():
    # TRL keeps the template Qwen/Qwen3-8B ships (checked against the hub weekly upstream);
    # read its file without importing trl (seconds).
    trl_dir = Path(importlib.util.find_spec("trl").submodule_search_locations[0])
    qwen3_chat_template = (trl_dir / "chat_templates" / "qwen3.jinja").read_text(encoding="utf-8")
    spec = BUNDLED["qwen3"]
    config = Path(__file__).resolve().parents[1] / "geora" / "assets" / spec.folder
    template = json.loads((config / "tokenizer_config.json").read_text())["chat_template"]
    assert template == qwen3_chat_template
    assert template.replace("is string", "is defined") != qwen3_chat_template  # can differ


def test_encode_decode_round_trip(qwen3):
    text = "Solve $x^2 = 4$: x = ±2. 中文 \\boxed{2}<|im_end|>"
    ids = qwen3(text)["input_ids"]
    assert qwen3.decode(ids) == text
    assert ids[-1] == qwen3.eos_token_id          # a special token stays one token
    assert qwen3.decode(ids[:-1]) != text


def test_unpack_is_cached_and_named(tmp_path):
    first = bundled_tokenizer_dir("qwen3", cache_dir=tmp_path)
    stamp = (first / "tokenizer.json").stat().st_mtime_ns
    assert bundled_tokenizer_dir("qwen3", cache_dir=tmp_path) == first
    assert (first / "tokenizer.json").stat().st_mtime_ns == stamp  # not unpacked twice
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]  # no temp folders left
    assert "Apache License" in (first / "LICENSE").read_text()
    with pytest.raises(ValueError, match="unknown bundled tokenizer 'qwen2'"):
        bundled_tokenizer_dir("qwen2", cache_dir=tmp_path)
    assert resolve_tokenizer_path("some/dir") == "some/dir"


def test_two_processes_unpack_at_once(tmp_path):
    code = ("import sys; from geora.tokenizer_assets import bundled_tokenizer_dir; "
            "print(bundled_tokenizer_dir('qwen3', cache_dir=sys.argv[1]))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    folders = {out.strip() for out, _ in outs}
    assert len(folders) == 1
    (folder,) = folders
    assert sorted(p.name for p in tmp_path.iterdir()) == [Path(folder).name]
    assert (Path(folder) / "tokenizer.json").stat().st_size == 11422654


def test_incomplete_cache_folder_is_refused(tmp_path):
    folder = bundled_tokenizer_dir("qwen3", cache_dir=tmp_path)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(RuntimeError, match="incomplete.*delete it"):
        bundled_tokenizer_dir("qwen3", cache_dir=tmp_path)
