"""Training-step cost of each fine-tuning method, as ratios to full fine-tuning measured in
the same process, on a random-weight Qwen3 built from a config (no download).

    python scripts/bench_step.py                          # Qwen3-1.7B shapes, batch 4 x 1024, bf16 (GPU)
    python scripts/bench_step.py --config small           # a CPU-sized model, fp32
    python scripts/bench_step.py --config micro --grpo    # a whole GRPO-like step per method
    python scripts/bench_step.py --config tiny --steps 2 --json out.json

One step = forward, backward, AdamW (a causal-LM loss on random tokens). `--grpo` times a
GRPO-like step instead: sample G completions for each of P random prompts with
transformers' `generate` (exactly C new tokens, T = 1), then one update on the token-level
policy-gradient loss -(A * log p(completion)).sum() / tokens, with group-normalised random
rewards as advantages. That is the loss TRL's GRPO/DAPO reduces to with one iteration per
generation and beta = 0; written by hand so the script needs only torch, transformers and
peft (TRL is not on the GPU machine).

Methods (`--methods`, comma-separated; the first one is the reference of every ratio):
  fullft       every parameter trains, weights in the model dtype (fp32 runs)
  fullft_amp   fp32 master weights + bf16 autocast (the usual mixed precision; bf16 runs)
  fullft_bf16  bf16 weights and optimizer state
  lora_peft    PEFT LoRA as it comes: get_peft_model defaults (fp32 adapters), unmerged rollouts
  lora_peft_bf16  the same with bf16 adapters (autocast_adapter_dtype=False)
  geora        this project's GeoRA adapters (geora.prepare_model), PEFT's layers as they are
  geora_fast   the same + geora.fused_lora (fused low-rank linear) + merged rollouts
               (geora.rollout_weights); fp32 adapter weights, compute in the model dtype
  lora_fast    PEFT's LoRA init + the same two speedups
Every bf16 run (`--precision bf16`, the default on CUDA) runs under bf16 autocast, as TRL
does with bf16=True. Adapters: r = --rank (16), alpha = r, all linear layers but lm_head.

Time: median over --steps after --warmup steps, torch.cuda.synchronize()d on GPU; on a CPU
each round runs every method once in a shuffled order (all models alive), so a busy machine
slows them alike, ratios are medians of the per-round ratios, and process CPU time is
recorded beside wall time. Memory: on CUDA,
torch.cuda.max_memory_allocated of each method run alone (models built one after the
other); everywhere, an estimate = parameters + gradients + optimizer state + the tensors
autograd saves for backward during one step (storages counted once, parameters excluded),
which ignores transient buffers (allocator slack, the loss's temporaries).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `geora` for the geora* methods

QWEN3_1_7B = dict(hidden_size=2048, num_hidden_layers=28, num_attention_heads=16,
                  num_key_value_heads=8, head_dim=128, intermediate_size=6144,
                  vocab_size=151936, tie_word_embeddings=True)
CONFIGS = {  # model shapes; batch x seq for the step; prompts x G, prompt/completion tokens for --grpo
    "qwen3_1.7b": dict(model=QWEN3_1_7B, batch=4, seq=1024, prompts=4, generations=8,
                       prompt_len=128, completion_len=128),
    "small": dict(model=dict(hidden_size=512, num_hidden_layers=4, num_attention_heads=8,
                             num_key_value_heads=4, head_dim=64, intermediate_size=1536,
                             vocab_size=8192, tie_word_embeddings=True),
                  batch=4, seq=256, prompts=4, generations=8, prompt_len=32, completion_len=32),
    "micro": dict(model=dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=4,
                             num_key_value_heads=2, head_dim=48, intermediate_size=512,
                             vocab_size=512, tie_word_embeddings=True),
                  batch=32, seq=96, prompts=4, generations=8, prompt_len=48, completion_len=48),
    "tiny": dict(model=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, head_dim=16, intermediate_size=128,
                            vocab_size=256, tie_word_embeddings=True),
                 batch=2, seq=16, prompts=2, generations=2, prompt_len=8, completion_len=4),
}
METHODS = ("fullft", "fullft_amp", "fullft_bf16", "lora_peft", "lora_peft_bf16", "geora",
           "geora_fast", "lora_fast")
DEFAULT_METHODS = {"bf16": "fullft_amp,fullft_bf16,lora_peft,lora_peft_bf16,geora_fast",
                   "fp32": "fullft,lora_peft,geora,geora_fast"}


# ------------------------------------------------------------------------------ models
def build_model(shapes: dict, dtype: torch.dtype, device: str, seed: int):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(**shapes, max_position_embeddings=4096, attn_implementation="sdpa")
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen3ForCausalLM(config).to(dtype)
    model.generation_config.pad_token_id = 0
    return model


def prepare(method: str, model, rank: int, device: str):
    """(model, rollout context factory) for `method`; trainable parameters set."""
    none = contextlib.nullcontext
    if method.startswith("fullft"):
        return model.requires_grad_(True), none
    if method.startswith("lora_peft"):
        from peft import LoraConfig, get_peft_model

        cfg = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules="all-linear",
                         task_type="CAUSAL_LM")
        return get_peft_model(model, cfg, autocast_adapter_dtype=method == "lora_peft"), none
    import geora  # this project's adapter path
    from geora.fused_lora import enable_fused_lora
    from geora.rollout_weights import rollout_weights

    name = "geora" if method.startswith("geora") else "lora"
    opts = {"svd_device": device} if name == "geora" else {}
    model = geora.prepare_model(model, name, rank=rank, **opts)
    if not method.endswith("_fast"):
        return model, none
    enable_fused_lora(model)
    return model, lambda: rollout_weights(model)


def amp(device: str, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_optimizer(model, device: str):
    params = [p for p in model.parameters() if p.requires_grad]
    fused = {"fused": True} if device.startswith("cuda") else {}
    return torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0, **fused)


# ------------------------------------------------------------------------------- steps
def lm_step(run, batch):
    with amp(run["device"], run["precision"]):
        loss = run["model"](input_ids=batch, labels=batch).loss
    loss.backward()
    run["opt"].step()
    run["opt"].zero_grad(set_to_none=True)


def generate(run, prompts, completion_len: int):
    model = run["model"]
    with torch.no_grad(), run["rollout"](), amp(run["device"], run["precision"]):
        return model.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts),
                              do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                              max_new_tokens=completion_len, min_new_tokens=completion_len)


def policy_gradient_step(run, seqs, completion_len: int, generations: int, seed: int):
    """One update on -(A * log p(completion tokens)).sum() / tokens (GRPO, beta 0, one iteration)."""
    completion = seqs[:, -completion_len:]                                   # (B, C)
    g = torch.Generator().manual_seed(seed)
    rewards = torch.rand(seqs.shape[0], generator=g).view(-1, generations)   # (P, G)
    adv = ((rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-4))
    adv = adv.reshape(-1, 1).to(seqs.device)
    with amp(run["device"], run["precision"]):
        logits = run["model"](input_ids=seqs, logits_to_keep=completion_len + 1).logits[:, :-1]
    logp = torch.log_softmax(logits.float(), -1).gather(-1, completion.unsqueeze(-1)).squeeze(-1)
    loss = -(adv * logp).sum() / logp.numel()
    loss.backward()
    run["opt"].step()
    run["opt"].zero_grad(set_to_none=True)


def grpo_step(run, cfg, step_seed: int):
    """(generation s, update s) of one GRPO-like step."""
    g = torch.Generator().manual_seed(step_seed)
    prompts = torch.randint(1, cfg["model"]["vocab_size"], (cfg["prompts"], cfg["prompt_len"]),
                            generator=g).repeat_interleave(cfg["generations"], 0).to(run["device"])
    t0 = clock(run["device"])
    seqs = generate(run, prompts, cfg["completion_len"])
    t1 = clock(run["device"])
    policy_gradient_step(run, seqs, cfg["completion_len"], cfg["generations"], step_seed)
    t2 = clock(run["device"])
    return (t1[0] - t0[0], t2[0] - t1[0]), (t1[1] - t0[1], t2[1] - t1[1])


def clock(device: str) -> tuple[float, float]:
    """(wall, process CPU) seconds, after the device has finished its queued work."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter(), time.process_time()


# ------------------------------------------------------------------------------ memory
def memory_estimate(run, step) -> float:
    """GiB: parameters + grads + optimizer state after one step + the storages autograd
    saved during it (parameters excluded, each storage once). Runs `step` once."""
    model = run["model"]
    param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen, saved = set(), [0]

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in param_ptrs and st.data_ptr() not in seen:
            seen.add(st.data_ptr())
            saved[0] += st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    storages = {}
    for p in model.parameters():
        storages[p.untyped_storage().data_ptr()] = p.untyped_storage().nbytes()
    grads = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    opt_state = sum(t.numel() * t.element_size() for s in run["opt"].state.values()
                    for t in s.values() if torch.is_tensor(t))
    return (sum(storages.values()) + grads + opt_state + saved[0]) / 2**30


# --------------------------------------------------------------------------------- run
def build_run(method: str, cfg: dict, args) -> dict:
    precision = args.precision
    dtype = torch.float32 if precision == "fp32" or method == "fullft_amp" else torch.bfloat16
    model = build_model(cfg["model"], dtype, args.device, args.seed)
    model, rollout = prepare(method, model, args.rank, args.device)
    model.train()
    run = {"method": method, "model": model, "rollout": rollout, "device": args.device,
           "precision": precision, "opt": make_optimizer(model, args.device),
           "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
           "wall": [], "cpu": [], "gen": [], "update": []}
    return run


def one_step(run, cfg, args, i: int):
    if args.grpo:
        (gen, upd), (gen_c, upd_c) = grpo_step(run, cfg, args.seed + i)
        return gen + upd, gen_c + upd_c, gen, upd
    batch = run["batch"]
    t0 = clock(args.device)
    lm_step(run, batch)
    t1 = clock(args.device)
    return t1[0] - t0[0], t1[1] - t0[1], None, None


def record(run, sample, measured: bool):
    if measured:
        wall, cpu, gen, upd = sample
        run["wall"].append(wall), run["cpu"].append(cpu)
        if gen is not None:
            run["gen"].append(gen), run["update"].append(upd)


def measure(methods: list[str], cfg: dict, args) -> dict[str, dict]:
    """Per method: step times and memory. CUDA: one method at a time (isolated peaks);
    CPU: all models alive, rounds in shuffled order."""
    g = torch.Generator().manual_seed(args.seed)
    batch = torch.randint(0, cfg["model"]["vocab_size"], (cfg["batch"], cfg["seq"]),
                          generator=g).to(args.device)
    cuda = args.device.startswith("cuda")
    done, runs = {}, []
    for method in methods:
        if cuda:
            gc.collect(), torch.cuda.empty_cache(), torch.cuda.reset_peak_memory_stats()
        run = build_run(method, cfg, args)
        run["batch"] = batch
        mem_step = (lambda r=run: one_step(r, cfg, args, -1))
        run["memory_estimate_gib"] = memory_estimate(run, mem_step)
        if cuda:  # sequential: warm-up, measure, peak, free
            for i in range(args.warmup + args.steps):
                record(run, one_step(run, cfg, args, i), i >= args.warmup)
            run["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
            done[method] = summarise(run)
            del run, mem_step
        else:
            runs.append(run)
    order = random.Random(args.seed)
    for i in range(args.warmup + args.steps):
        for run in order.sample(runs, len(runs)):
            record(run, one_step(run, cfg, args, i), i >= args.warmup)
    for run in runs:
        done[run["method"]] = summarise(run)
    return done


TIMES = {"step_s": "wall", "cpu_step_s": "cpu", "generation_s": "gen", "update_s": "update"}


def summarise(run) -> dict:
    out = {key: statistics.median(run[src]) for key, src in TIMES.items() if run[src]}
    out.update(trainable_params=run["trainable"], memory_estimate_gib=run["memory_estimate_gib"],
               samples={key: run[src] for key, src in TIMES.items() if run[src]})
    if "peak_gib" in run:
        out["peak_gib"] = run["peak_gib"]
    return out


def add_ratios(results: dict[str, dict], reference: str, paired: bool) -> None:
    """`<name>_ratio` = value / reference's. Times, when `paired` (CPU rounds): the median
    over rounds of the ratio within each round; else the ratio of the medians."""
    ref = results[reference]
    for r in results.values():
        for key in list(TIMES) + ["memory_estimate_gib", "peak_gib"]:
            if r.get(key) is None or not ref.get(key):
                continue
            ratio = r[key] / ref[key]
            if paired and key in TIMES:
                ratio = statistics.median(a / b for a, b in zip(r["samples"][key], ref["samples"][key]))
            r[f"{key.rsplit('_', 1)[0]}_ratio"] = ratio


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="qwen3_1.7b", choices=sorted(CONFIGS))
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "head_dim", "intermediate_size", "vocab_size"):
        ap.add_argument("--" + key.replace("_", "-"), type=int, help="override the config's shape")
    for key in ("batch", "seq", "prompts", "generations", "prompt_len", "completion_len"):
        ap.add_argument("--" + key.replace("_", "-"), type=int, help="override the config's size")
    ap.add_argument("--methods", default=None, help=f"comma-separated, first = reference; of {METHODS}")
    ap.add_argument("--precision", choices=("bf16", "fp32"), default=None,
                    help="default: bf16 on CUDA, fp32 on CPU")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--grpo", action="store_true", help="time a GRPO-like step (generation + update)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)
    args.precision = args.precision or ("bf16" if args.device.startswith("cuda") else "fp32")
    args.methods = (args.methods or DEFAULT_METHODS[args.precision]).split(",")
    bad = [m for m in args.methods if m not in METHODS]
    if bad:
        ap.error(f"--methods: unknown {bad}; choose from {list(METHODS)}")
    if args.precision == "fp32" and {"fullft_amp", "fullft_bf16", "lora_peft_bf16"} & set(args.methods):
        ap.error("--methods fullft_amp / fullft_bf16 / lora_peft_bf16 need --precision bf16")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: torch sees no CUDA device")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = json.loads(json.dumps(CONFIGS[args.config]))
    for key in list(cfg["model"]) + ["batch", "seq", "prompts", "generations", "prompt_len",
                                     "completion_len"]:
        value = getattr(args, key, None)
        if value is not None:
            (cfg["model"] if key in cfg["model"] else cfg)[key] = value
    load_before = os.getloadavg()
    results = measure(args.methods, cfg, args)
    add_ratios(results, args.methods[0], paired=not args.device.startswith("cuda"))
    import peft
    import transformers

    out = {
        "benchmark": "grpo_step" if args.grpo else "train_step", "config": args.config,
        "shapes": cfg, "precision": args.precision, "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else
        f"{platform.machine()} CPU, {torch.get_num_threads()} torch threads",
        "reference": args.methods[0], "rank": args.rank, "warmup": args.warmup,
        "steps": args.steps, "memory": ("peak_gib: torch.cuda.max_memory_allocated; " if
                                        args.device.startswith("cuda") else "") +
        "memory_estimate_gib: params + grads + optimizer state + saved activations",
        "load_average_1min": {"start": load_before[0], "end": os.getloadavg()[0],
                              "cpu_count": os.cpu_count()},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__, "python": platform.python_version()},
        "methods": results,
    }
    report(out)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return out


def report(out: dict) -> None:
    print(f"{out['benchmark']} on {out['device_name']}, config {out['config']}, "
          f"{out['precision']}; ratios to {out['reference']}")
    cols = [("step_s", "step s", ".4f"), ("step_ratio", "x", ".3f"), ("cpu_step_ratio", "x cpu", ".3f"),
            ("generation_s", "gen s", ".4f"), ("update_s", "update s", ".4f"),
            ("update_ratio", "x upd", ".3f"), ("memory_estimate_gib", "mem est GiB", ".3f"),
            ("memory_estimate_ratio", "x", ".3f"), ("peak_gib", "peak GiB", ".2f"), ("peak_ratio", "x", ".3f")]
    cols = [c for c in cols if any(r.get(c[0]) is not None for r in out["methods"].values())]
    print(f"{'method':<16}" + "".join(f"{h:>12}" for _, h, _ in cols))
    for name, r in out["methods"].items():
        print(f"{name:<16}" + "".join(f"{r[k]:>12{f}}" if r.get(k) is not None else f"{'-':>12}"
                                      for k, _, f in cols))


if __name__ == "__main__":
    main()
