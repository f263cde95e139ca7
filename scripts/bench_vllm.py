"""`scripts/bench_rollouts.py --engine vllm`: vLLM against transformers on the CPU (the
.venv-vllm environment), as ratios taken in one run.

1. Rollout tokens/s: the same prompts (micro_math chat prompts, --prompts of them), --tokens
   sampled tokens each (T = 1, every completion runs to the end: min_tokens = max_tokens,
   EOS ignored), by transformers' batched `generate` and by vLLM's `LLM.generate`, both in
   float32 with --threads threads, on the micro model and on a random-init Qwen3 of hidden
   size 768 (intermediate 2048, 12 heads / 4 KV heads of 64, 4 layers, the micro tokenizer;
   the README's h768 setting). --repeats rounds, the two engines taking turns within each
   round; a ratio is the median over rounds of vLLM / transformers in the same round.
2. The GRPO step: `run.py train.max_steps=--grpo-steps eval=none` (micro model, GeoRA, 4
   prompts x 8 completions x 48 tokens) with train.use_vllm=false, then true; the median
   step time of each (results.json train.step_time_s, the first step left out: it holds
   vLLM's first weight sync and warm-up).

The engines run one at a time (vLLM's in a child process, idle while transformers runs).
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
H768 = dict(hidden_size=768, intermediate_size=2048, head_dim=64, num_attention_heads=12,
            num_key_value_heads=4)


def random_h768(micro_dir: Path, out_dir: Path) -> Path:
    """A random-init Qwen3 of hidden 768 (the micro config otherwise) saved with the micro
    tokenizer: vLLM loads models from folders."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(micro_dir)
    for key, value in H768.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(micro_dir).save_pretrained(out_dir)
    return out_dir


def rollout_rates(model_dir: Path, prompts_fn, args) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from vllm import LLM, SamplingParams

    tok = AutoTokenizer.from_pretrained(model_dir)
    batch = prompts_fn(tok, args.prompts)
    ids = [row[mask.bool()].tolist() for row, mask in zip(batch["input_ids"], batch["attention_mask"])]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    t0 = time.perf_counter()
    llm = LLM(model=str(model_dir), dtype="float32", seed=0, max_model_len=512,
              max_num_seqs=args.prompts)
    engine_start_s = time.perf_counter() - t0
    params = SamplingParams(temperature=1.0, top_p=1.0, top_k=0, max_tokens=args.tokens,
                            min_tokens=args.tokens, ignore_eos=True, seed=0)

    def hf() -> float:
        t = time.perf_counter()
        with torch.no_grad():
            out = model.generate(**batch, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                                 max_new_tokens=args.tokens, min_new_tokens=args.tokens)
        assert out.shape[1] - batch["input_ids"].shape[1] == args.tokens
        return out.shape[0] * args.tokens / (time.perf_counter() - t)

    def vl() -> float:
        t = time.perf_counter()
        outs = llm.generate([{"prompt_token_ids": p} for p in ids], params, use_tqdm=False)
        n = sum(len(o.outputs[0].token_ids) for o in outs)
        assert n == len(ids) * args.tokens
        return n / (time.perf_counter() - t)

    hf(), vl()   # warm-up
    rounds = []
    for rep in range(args.repeats):
        first, second = (hf, vl) if rep % 2 == 0 else (vl, hf)   # alternate who goes first
        a, b = first(), second()
        rounds.append((a, b) if first is hf else (b, a))
        print(f"{model_dir.name}: round {rep + 1}/{args.repeats} hf {rounds[-1][0]:.0f} "
              f"vllm {rounds[-1][1]:.0f} tokens/s", file=sys.stderr)
    del llm
    return {"engine_start_s": round(engine_start_s, 1),
            "transformers_tokens_per_s": statistics.median(r[0] for r in rounds),
            "vllm_tokens_per_s": statistics.median(r[1] for r in rounds),
            "vllm_over_transformers": statistics.median(r[1] / r[0] for r in rounds),
            "rounds": [{"transformers": r[0], "vllm": r[1]} for r in rounds]}


def grpo_step(use_vllm: bool, steps: int, out_dir: Path, threads: int) -> dict:
    cmd = [sys.executable, "run.py", f"train.max_steps={steps}", "eval=none",
           f"train.use_vllm={str(use_vllm).lower()}", f"cpu_threads={threads}",
           "train.overwrite=true", f"hydra.run.dir={out_dir}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
    record = json.loads((out_dir / "results.json").read_text())["train"]
    log = [json.loads(line) for line in (out_dir / "train_log.jsonl").read_text().splitlines()]
    # one record per step (logging_steps=1; the run's summary record has no "loss"); dt is
    # the time since the previous step's record, so steps 2.. have one
    step_s = [r["dt"] for r in log if "loss" in r and r.get("dt") is not None]
    return {"use_vllm": use_vllm, "wall_s": round(time.perf_counter() - t0, 1),
            "median_step_s_after_first": statistics.median(step_s) if step_s else None,
            "step_s": step_s, "rollout_engine": record.get("rollout_engine")}


def main(args, prompts_fn) -> dict:
    from geora.vllm_backend import apply_cpu_engine_env, vllm_distribution

    torch.set_num_threads(args.threads)
    apply_cpu_engine_env(args.threads)
    micro = Path(args.model)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-vllm-") as tmp:
        rates = {"micro": rollout_rates(micro, prompts_fn, args),
                 "qwen3_h768_random": rollout_rates(random_h768(micro, Path(tmp) / "h768"),
                                                    prompts_fn, args)}
        grpo = {"transformers": grpo_step(False, args.grpo_steps, Path(tmp) / "hf", args.threads),
                "vllm": grpo_step(True, args.grpo_steps, Path(tmp) / "vllm", args.threads)}
    hf_s, vl_s = (grpo[k]["median_step_s_after_first"] for k in ("transformers", "vllm"))
    result = {
        "benchmark": "rollouts_vllm", "engine": vllm_distribution(),
        "prompts": args.prompts, "new_tokens": args.tokens, "repeats": args.repeats,
        "threads": args.threads, "sampling": "T=1, top_p=1, top_k=0, every completion to the end",
        "rollouts": rates,
        "grpo": {**grpo, "vllm_step_over_transformers_step": vl_s / hf_s if hf_s else None,
                 "setting": f"run.py micro GeoRA, {args.grpo_steps} steps, eval=none, "
                            f"4 prompts x 8 completions x <=48 tokens"},
        "load_average_1min": {"start": load_start[0], "end": os.getloadavg()[0]},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
    }
    for name, r in rates.items():
        print(f"{name:<20} transformers {r['transformers_tokens_per_s']:8.0f} tok/s  vllm "
              f"{r['vllm_tokens_per_s']:8.0f} tok/s  x{r['vllm_over_transformers']:.2f}")
    print(f"GRPO step (median after the first): transformers {hf_s:.2f} s, vllm {vl_s:.2f} s")
    if args.json:
        from geora.fileio import atomic_write_json

        atomic_write_json(args.json, result)
    return result
