"""The bundled micro model directory (geora/assets/micro): loads without project code, renders
ChatML, generates, and (slow) sits in the skill band that leaves room for RL.

    .venv/bin/python -m pytest -q tests/test_micro_model.py            # fast checks
    .venv/bin/python -m pytest -q -m slow tests/test_micro_model.py    # the full band check
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from geora.answers import is_correct, last_boxed
from geora.data.micro import TASKS, make_split

ROOT = Path(__file__).resolve().parents[1]
MICRO = ROOT / "geora" / "assets" / "micro"


def _script():
    spec = importlib.util.spec_from_file_location("pretrain_micro", ROOT / "scripts" / "pretrain_micro.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def micro():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(MICRO, dtype=torch.float32).eval(),
            AutoTokenizer.from_pretrained(MICRO))


def greedy(model, tok, questions, max_new_tokens=80):
    msgs = [[{"role": "user", "content": q}] for q in questions]
    texts = [tok.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in msgs]
    enc = tok(texts, return_tensors="pt", padding=True, padding_side="left")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    return tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def test_directory_is_small_and_complete():
    names = {p.name for p in MICRO.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "generation_config.json"} <= names
    assert sum(p.stat().st_size for p in MICRO.iterdir()) <= 20 * 2**20


def test_loads_without_project_code():
    """A fresh interpreter that imports only transformers loads the directory and generates."""
    code = f"""
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained({str(MICRO)!r})
model = AutoModelForCausalLM.from_pretrained({str(MICRO)!r})
ids = tok.apply_chat_template([{{"role": "user", "content": "Reverse the list: 1, 2, 3"}}],
                              add_generation_prompt=True, return_tensors="pt", return_dict=True)
out = model.generate(**ids, max_new_tokens=20, do_sample=False)
assert not any(m == "geora" or m.startswith("geora.") for m in sys.modules)
print(type(model).__name__, repr(tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd="/", timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("Qwen3ForCausalLM "), res.stdout


def test_architecture_and_tokenizer(micro):
    model, tok = micro
    assert type(model).__name__ == "Qwen3ForCausalLM"
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= names
    assert 1.5e6 < sum(p.numel() for p in model.parameters()) < 2.0e6
    assert len(tok) <= model.config.vocab_size
    assert tok.eos_token == "<|im_end|>" and tok.pad_token is not None
    assert tok.pad_token_id != tok.eos_token_id
    assert model.generation_config.eos_token_id == tok.eos_token_id
    # digits are single tokens: "1234" is four tokens
    assert [tok.decode([i]) for i in tok("1234")["input_ids"]] == ["1", "2", "3", "4"]


def test_chat_template_renders_user_and_assistant(micro):
    _, tok = micro
    msgs = [{"role": "user", "content": "Sort the list: 3, 1"},
            {"role": "assistant", "content": "\\boxed{1, 3}"}]
    full = tok.apply_chat_template(msgs, tokenize=False)
    prompt = tok.apply_chat_template(msgs[:1], add_generation_prompt=True, tokenize=False)
    assert prompt == "<|im_start|>user\nSort the list: 3, 1<|im_end|>\n<|im_start|>assistant\n"
    assert full == prompt + "\\boxed{1, 3}<|im_end|>\n"
    enc = tok.apply_chat_template(msgs, return_dict=True, return_assistant_tokens_mask=True)
    masked = [i for i, m in zip(enc["input_ids"], enc["assistant_masks"]) if m]
    assert tok.decode(masked) == "\\boxed{1, 3}<|im_end|>"


def test_tokenizer_rebuilds_identically():
    """scripts/pretrain_micro.py rebuilds the committed tokenizer from the generator alone."""
    from geora.data.micro_tokenizer import build_tokenizer

    committed = json.loads((MICRO / "tokenizer.json").read_text())
    rebuilt = json.loads(build_tokenizer(seed=0).backend_tokenizer.to_str())
    assert rebuilt["model"]["vocab"] == committed["model"]["vocab"]
    assert rebuilt["model"]["merges"] == committed["model"]["merges"]


def test_loss_covers_exactly_the_answer():
    from transformers import AutoTokenizer

    mod = _script()
    tok = AutoTokenizer.from_pretrained(MICRO)
    examples = mod.build_examples(tok, 40, seed=0, mix={"math": 0.5, "reverse": 0.25, "sort": 0.25})
    ids, att, lab = mod.collate(examples[:8], tok.pad_token_id)
    assert ids.shape == att.shape == lab.shape
    answers = {r["r1_solution_1"] for t in TASKS for r in make_split(t, "train", 40)}
    for row in lab:
        text = tok.decode(row[row != -100])
        assert text.endswith("<|im_end|>") and text[:-len("<|im_end|>")] in answers
    # the schedule warms up, peaks, and decays to 10% of the peak
    lrs = [mod.lr_at(s, 100, 1.0, 10) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3) and max(lrs) == pytest.approx(1.0)


def test_short_greedy_evaluation(micro):
    """A handful of items per task: runs in seconds; answers come boxed; probes mostly right."""
    model, tok = micro
    scores = {}
    for task in TASKS:
        recs = make_split(task, "test", 8)
        comps = greedy(model, tok, [r["question"] for r in recs])
        assert all(last_boxed(c) is not None for c in comps), comps
        if task == "math":
            hits = [is_correct(r["final_answer"], c) for r, c in zip(recs, comps)]
        else:
            hits = [last_boxed(c) == r["final_answer"] for r, c in zip(recs, comps)]
        scores[task] = sum(hits) / len(hits)
    # measured on the committed weights: both probes 8/8; 6/8 leaves room for library drift
    assert scores["reverse"] >= 0.75 and scores["sort"] >= 0.75, scores


@pytest.mark.slow
def test_skill_band(micro):
    """The issue's band: greedy math 20-60% on 200 test items, hardest level clearly below the
    easiest, pass@8 at T=1 clearly above greedy, each probe >= 80% on 200 items."""
    model, tok = micro
    recs = make_split("math", "test", 200)
    comps = greedy(model, tok, [r["question"] for r in recs])
    hits = [is_correct(r["final_answer"], c) for r, c in zip(recs, comps)]
    acc = sum(hits) / len(hits)
    by = {d: [h for r, h in zip(recs, hits) if r["difficulty"] == d] for d in (1.0, 4.0)}
    easy, hard = (sum(by[d]) / len(by[d]) for d in (1.0, 4.0))
    assert 0.20 <= acc <= 0.60, acc
    assert hard + 0.2 <= easy, (easy, hard)

    torch.manual_seed(0)
    msgs = [tok.apply_chat_template([{"role": "user", "content": r["question"]}],
                                    add_generation_prompt=True, tokenize=False) for r in recs]
    solved = []
    for i in range(0, len(recs), 25):
        enc = tok(msgs[i:i + 25], return_tensors="pt", padding=True, padding_side="left")
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=80, do_sample=True, temperature=1.0,
                                 top_k=0, top_p=1.0, num_return_sequences=8)
        texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        for j, r in enumerate(recs[i:i + 25]):
            solved.append(any(is_correct(r["final_answer"], t) for t in texts[8 * j:8 * j + 8]))
    pass8 = sum(solved) / len(solved)
    assert pass8 >= acc + 0.1, (pass8, acc)

    for task in ("reverse", "sort"):
        probe = make_split(task, "test", 200)
        out = greedy(model, tok, [r["question"] for r in probe], max_new_tokens=32)
        em = sum(last_boxed(c) == r["final_answer"] for r, c in zip(probe, out)) / len(probe)
        assert em >= 0.80, (task, em)


def test_checkpoint_choice():
    """The kept checkpoint lies in the math band and has the best worst probe; none -> error."""
    choose = _script().choose
    h = lambda step, math, rev, srt: {"step": step, "select": {"math": math, "reverse": rev, "sort": srt}}  # noqa: E731
    hist = [h(100, 0.10, 1.0, 1.0), h(200, 0.34, 0.97, 0.81), h(300, 0.50, 1.0, 0.84),
            h(400, 0.51, 1.0, 0.78), h(500, 0.65, 1.0, 0.95)]
    assert choose(hist, 0.40, 0.25, 0.55, 0.80)["step"] == 300
    assert choose(hist[:2], 0.40, 0.25, 0.55, 0.80)["step"] == 200
    with pytest.raises(RuntimeError, match="0.25, 0.55"):
        choose(hist[:2], 0.40, 0.25, 0.55, 0.90)
