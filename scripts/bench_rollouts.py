"""Rollout speed per method kind: tokens/s of sampling from the plain model, from each
prepared model as it is (adapters unmerged, SparseFT parametrized), and inside
`geora.rollout_weights.rollout_weights` (adapters merged, restored exactly afterwards).

    python scripts/bench_rollouts.py                        # micro model, 32 prompts x 48 tokens
    python scripts/bench_rollouts.py --methods lora,geora --repeats 3 --json out.json
    .venv-vllm/bin/python scripts/bench_rollouts.py --engine vllm --json out.json   # vLLM vs generate

--engine vllm (the .venv-vllm environment, see scripts/bench_vllm.py): tokens/s of vLLM
against transformers' batched generate, on the micro model and on a random-init Qwen3 of
hidden size 768, and the GRPO step (run.py) with and without vLLM rollouts.

Every generation samples (T = 1) exactly --tokens new tokens (min_new_tokens = max), so
tokens/s compare like with like. Each of --repeats rounds runs every configuration once in
a shuffled order, so that a busy machine slows all of them alike; a ratio is the median
over rounds of (config / plain model in the same round), and a second copy of the plain
model ("plain/control") shows the run's own noise. After each merged generation the script
checks that every parameter is bitwise unchanged.
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_METHODS = "lora,geora,pissa,milora,dora,adalora,sparseft,fullft"


def micro_prompts(tokenizer, n: int):
    """n micro_math training questions as the chat prompts TRL would send, left-padded."""
    from geora.data.micro import make_split
    from geora.prompts import chat_prompt

    texts = [tokenizer.apply_chat_template(chat_prompt(r["question"], suffix=""), tokenize=False,
                                           add_generation_prompt=True)
             for r in make_split("math", "train", n)]   # micro: bare questions (suffix "")
    tokenizer.padding_side = "left"
    return tokenizer(texts, return_tensors="pt", padding=True)


def tokens_per_s(model, batch, tokens: int, seed: int) -> tuple[float, float]:
    """(wall-clock, process-CPU-time) tokens/s of one sampled generation."""
    torch.manual_seed(seed)
    t0, c0 = time.perf_counter(), time.process_time()
    out = model.generate(**batch, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                         max_new_tokens=tokens, min_new_tokens=tokens)
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    assert out.shape[1] - batch["input_ids"].shape[1] == tokens
    n = out.shape[0] * tokens
    return n / dt, n / dc


def snapshot(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(Path(__file__).resolve().parents[1] / "geora/assets/micro"))
    ap.add_argument("--methods", default=DEFAULT_METHODS)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--engine", choices=("transformers", "vllm"), default="transformers")
    ap.add_argument("--grpo-steps", type=int, default=6,
                    help="--engine vllm: optimizer steps of each GRPO run (the first is left out)")
    args = ap.parse_args(argv)
    if args.engine == "vllm":
        from scripts.bench_vllm import main as vllm_main   # its own file: this one stays short

        return vllm_main(args, micro_prompts)

    import geora
    from geora.rollout_weights import rollout_weights
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(args.model)
    batch = micro_prompts(tok, args.prompts)
    load = lambda: AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    models = {"plain": load(), "plain/control": load()}
    methods = [m for m in args.methods.split(",") if m]
    for name in methods:
        opts = {"total_step": 100} if name == "adalora" else {}
        torch.manual_seed(0)
        model = geora.prepare_model(load(), name, **({} if name == "fullft" else
                                                      {"rank": args.rank}), **opts).eval()
        with torch.no_grad():   # trained-looking adapters: B != 0 everywhere
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(torch.randn_like(p), alpha=1e-3)
        models[name] = model

    # Every repeat runs every config once, in a shuffled order; "plain/control" is a second
    # copy of the plain model, so that the run shows its own noise floor.
    configs = [("plain", "plain", False), ("plain/control", "plain/control", False)]
    configs += [(f"{m}/{kind}", m, kind == "merged") for m in methods for kind in ("unmerged", "merged")]
    samples: dict[str, list[tuple[float, float]]] = {key: [] for key, _, _ in configs}
    load_before = os.getloadavg()
    exact = True
    order_rng = random.Random(0)
    with torch.no_grad():
        for model in models.values():           # warm-up: one short generation each
            tokens_per_s(model, batch, 4, seed=0)
        for rep in range(args.repeats):
            for key, name, merged in order_rng.sample(configs, len(configs)):
                model = models[name]
                if not merged:
                    samples[key].append(tokens_per_s(model, batch, args.tokens, rep))
                    continue
                before = snapshot(model)
                with rollout_weights(model):
                    samples[key].append(tokens_per_s(model, batch, args.tokens, rep))
                exact &= all(torch.equal(before[n], p) for n, p in model.named_parameters())
            print(f"repeat {rep + 1}/{args.repeats} done", file=sys.stderr)

    def summary(key: str, clock: int) -> dict:
        ours, plain = [s[clock] for s in samples[key]], [s[clock] for s in samples["plain"]]
        return {"tokens_per_s": statistics.median(ours),
                # per-repeat ratios (same repeat, neighbouring in time), then their median
                "ratio_to_plain": statistics.median(o / p for o, p in zip(ours, plain)),
                "best_ratio_to_plain": max(ours) / max(plain), "samples": ours}

    rows = {k: {"wall": summary(k, 0), "cpu": summary(k, 1)} for k in samples}
    result = {
        "benchmark": "rollouts", "model": args.model, "prompts": args.prompts,
        "new_tokens": args.tokens, "repeats": args.repeats, "threads": args.threads,
        "rank": args.rank, "sampling": "T=1, top_p=1, top_k=0, min_new_tokens=max_new_tokens",
        "clocks": "wall: wall clock; cpu: process CPU time (less sensitive to other jobs on a "
                  "shared machine). ratio_to_plain: median over repeats of the ratio to the "
                  "plain model in the same repeat; best_ratio_to_plain: best over best",
        "weights_bitwise_restored": exact,
        "load_average_1min": {"start": load_before[0], "end": os.getloadavg()[0]},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} "
                   f"torch threads, torch {torch.__version__}",
        "results": rows,
    }
    print(f"{'config':<22}{'tok/s':>8}{'x plain':>9}{'best':>7}{'CPU tok/s':>11}{'x plain':>9}{'best':>7}")
    for k, r in rows.items():
        w, c = r["wall"], r["cpu"]
        print(f"{k:<22}{w['tokens_per_s']:>8.0f}{w['ratio_to_plain']:>9.3f}{w['best_ratio_to_plain']:>7.3f}"
              f"{c['tokens_per_s']:>11.0f}{c['ratio_to_plain']:>9.3f}{c['best_ratio_to_plain']:>7.3f}")
    print(f"weights bitwise restored after every merged generation: {exact}")
    if args.json:
        from geora.fileio import atomic_write_json

        atomic_write_json(args.json, result)
    if not exact:
        raise SystemExit("a merged generation left the weights changed")
    return result


if __name__ == "__main__":
    main()
