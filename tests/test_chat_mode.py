"""One chat mode everywhere: model.enable_thinking reaches TRL's rollout prompts, the rewards
and lm-eval's prompts. With the real Qwen3 tokenizer and chat template (bundled), the
prompt TRL renders for a training problem and the prompt lm-eval renders for the same
problem are the same string, in both modes.

    .venv/bin/python -m pytest -q tests/test_chat_mode.py
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from geora import rewards

ROOT = Path(__file__).resolve().parents[1]
EVAL_FIXTURES = ROOT / "tests" / "fixtures" / "eval"
pytestmark = pytest.mark.filterwarnings("ignore:.*is validated against ConfigStore schema")
# Qwen3-8B's architecture shrunk to two tiny layers, random weights, the real tokenizer.
SHRUNK = ["model.random_init=true", "model.tokenizer_path=bundled:qwen3", "model.dtype=float32",
          "model.arch.hidden_size=32", "model.arch.num_hidden_layers=1",
          "model.arch.num_attention_heads=2", "model.arch.num_key_value_heads=1",
          "model.arch.head_dim=16", "model.arch.intermediate_size=64",
          "model.arch.tie_word_embeddings=true", "device=cpu", "train.bf16=false",
          "train.gradient_checkpointing=false", "train.num_generations=2",
          "train.prompts_per_step=1", "train.gradient_accumulation_steps=1"]


def config(thinking: bool, *overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=["experiment=paper_main_qwen3_8b", "method=geora",
                                            *SHRUNK, f"model.enable_thinking={str(thinking).lower()}",
                                            *overrides])


@pytest.fixture(scope="module")
def shrunk_qwen3():
    """(LoRA-prepared shrunk Qwen3, the real Qwen3 tokenizer), as the pipeline hands them to
    the trainer and to the evaluation."""
    import geora
    from geora.models import load_model

    model, tokenizer = load_model(config(False).model)
    return geora.prepare_model(model, "lora", rank=2), tokenizer


def math500_problems() -> list[dict]:
    rows = (EVAL_FIXTURES / "math500.jsonl").read_text().splitlines()
    return [json.loads(r) for r in rows[:2]]


def training_prompts(cfg, model, tokenizer, problems, tmp_path) -> list[str]:
    """What TRL feeds the policy: the data's chat prompt (geora.data.loaders), tokenized by
    GRPOTrainer's own `_tokenize_prompts` with the GRPOConfig our grpo_config builds."""
    from omegaconf import OmegaConf

    from geora.data.loaders import load_data
    from geora.training.grpo import build_trainer

    path = tmp_path / "deepmath.jsonl"
    path.write_text("".join(json.dumps({"question": p["problem"], "final_answer": p["answer"]})
                            + "\n" for p in problems))
    data_cfg = OmegaConf.merge(cfg.data, {"local_path": str(path), "test_size": 0})
    data = load_data(data_cfg)[0]
    trainer = build_trainer(model, tokenizer, data, cfg.train, output_dir=str(tmp_path / "out"),
                            seed=0, device="cpu", report_to=[],
                            enable_thinking=cfg.model.enable_thinking)
    ids, _images, _fields = trainer._tokenize_prompts([row["prompt"] for row in data])
    return [tokenizer.decode(i) for i in ids], ids


def evaluation_prompts(cfg, model, tokenizer, tmp_path) -> list[tuple[dict, str]]:
    """What lm-eval's HFLM fed the model for MATH500 (the eval config's chat settings)."""
    from omegaconf import OmegaConf

    from geora.evaluation import evaluate_in_memory

    eval_cfg = OmegaConf.merge(cfg.eval, {"tasks": ["math500"], "in_domain": ["math500"],
                                          "data_dir": str(EVAL_FIXTURES), "limit": 2,
                                          "repeats": 1, "max_gen_toks": 2, "batch_size": 2})
    out = tmp_path / "eval"
    evaluate_in_memory(model, tokenizer, eval_cfg, out)
    rows = (out / "samples_geora_math500.jsonl").read_text().splitlines()
    return [(json.loads(r)["doc"], json.loads(r)["prompt"]) for r in rows]


@pytest.mark.parametrize("thinking", [False, True])
def test_training_and_evaluation_prompts_are_one_string(thinking, shrunk_qwen3, tmp_path):
    model, tokenizer = shrunk_qwen3
    assert len(tokenizer) == 151669   # the real Qwen3 vocabulary, model.tokenizer_path=bundled:qwen3
    cfg = config(thinking)
    assert cfg.eval.enable_thinking is thinking   # interpolated from model.enable_thinking
    problems = math500_problems()
    trained, ids = training_prompts(cfg, model, tokenizer, problems, tmp_path)
    evaluated = evaluation_prompts(cfg, model, tokenizer, tmp_path)
    assert [doc["problem"] for doc, _ in evaluated] == [p["problem"] for p in problems]
    for t, (doc, e), i in zip(trained, evaluated, ids):
        assert t == e
        assert list(i) == tokenizer(e, add_special_tokens=False)["input_ids"]   # same tokens too
        assert e.startswith("<|im_start|>user\n" + doc["problem"])
        # Qwen3's non-thinking mode opens the answer with an empty think block
        assert e.endswith("<|im_start|>assistant\n" + ("" if thinking else "<think>\n\n</think>\n\n"))


def test_the_comparison_can_fail(shrunk_qwen3, tmp_path):
    """Without the chat-mode kwargs TRL would render Qwen3's thinking prompt: a different
    string from the non-thinking evaluation's."""
    model, tokenizer = shrunk_qwen3
    cfg = config(False)
    (_doc, evaluated), *_ = evaluation_prompts(cfg, model, tokenizer, tmp_path)
    from omegaconf import OmegaConf

    trained, _ = training_prompts(OmegaConf.merge(cfg, {"model": {"enable_thinking": None}}),
                                  model, tokenizer, math500_problems()[:1], tmp_path)
    assert trained[0] != evaluated and evaluated.startswith(trained[0])


def test_grpo_config_carries_the_mode_and_its_length():
    from geora.training.grpo import grpo_config

    for thinking, length in ((False, 4096), (True, 16384)):
        cfg = config(thinking, "device=cpu")
        args = grpo_config(cfg.train, output_dir="unused", seed=0, device="cpu", report_to=[],
                           enable_thinking=cfg.model.enable_thinking)
        assert args.chat_template_kwargs == {"enable_thinking": thinking}
        assert args.max_completion_length == length
    micro = compose_micro()
    args = grpo_config(micro.train, output_dir="unused", seed=0, device="cpu", report_to=[],
                       enable_thinking=micro.model.enable_thinking)
    assert args.chat_template_kwargs is None and args.max_completion_length == 48


def compose_micro():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config")


@pytest.mark.parametrize("reward,column,answer", [
    (rewards.accuracy_reward, {"final_answer": ["4"] * 4}, r"\boxed{4}"),
    (rewards.choice_reward, {"final_answer": ["B"] * 4}, r"\boxed{B}"),
    (rewards.format_reward, {}, r"\boxed{4}"),
])
def test_rewards_score_only_the_answer_after_the_thinking(reward, column, answer):
    """A box inside <think> is not an answer; an answer after </think> is; a completion
    cut off while thinking has none; a non-thinking completion is read whole."""
    completions = [f"<think>maybe {answer}</think>\n\nSo the answer is {answer}",
                   f"<think>I think it is {answer}</think>\n\nNo idea.",
                   f"<think>still thinking {answer}",
                   f"So the answer is {answer}"]
    assert reward(completions, **column) == [1.0, 0.0, 0.0, 1.0]


def test_evaluation_reads_completions_as_the_rewards_do():
    from geora.evaluation.harness import _thinking_args
    from geora.evaluation.settings import EvalSettings
    from geora.evaluation.tasks import utils

    doc = {"problem": "2 + 2?", "answer": "4"}
    # lm-eval cuts at the last </think> already; a completion still thinking scores 0
    assert utils.process_math(doc, [[r"\boxed{4}", r"<think>\boxed{4}"]])["avg_at_k"] == 0.5
    on = EvalSettings.from_config({"tasks": ["math500"], "enable_thinking": True})
    assert _thinking_args(on) == {"enable_thinking": True, "think_end_token": rewards.THINK_END}
    off = EvalSettings.from_config({"tasks": ["math500"], "enable_thinking": False})
    assert _thinking_args(off) == {"enable_thinking": False}
    assert _thinking_args(EvalSettings.from_config({"tasks": ["math500"]})) == {}


def test_a_second_chat_mode_or_a_loglikelihood_task_in_thinking_mode_stops_at_start():
    from geora.training.checks import check_run_inputs
    from geora.training.settings import RunSettings

    cfg = config(False, "eval.enable_thinking=true", "eval.tasks=[math500]",
                 f"eval.data_dir={EVAL_FIXTURES}")
    with pytest.raises(ValueError, match=r"eval.enable_thinking=True but model.enable_thinking=False"):
        check_run_inputs(RunSettings.from_config(cfg))
    cfg = config(True, "eval.tasks=[mmlu]", f"eval.data_dir={EVAL_FIXTURES}")
    with pytest.raises(ValueError, match=r"eval.tasks has mmlu, scored by log-likelihood.*thinking"):
        RunSettings.from_config(cfg)
