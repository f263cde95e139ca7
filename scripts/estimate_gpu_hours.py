"""GPU-hour estimates of the paper's tables at full scale (README "The paper's tables").

    python scripts/estimate_gpu_hours.py

Estimates, not measurements: every constant below is an assumption stated in the README
(update cost from a measured H200 full fine-tuning step scaled by parameter count, rollout
and evaluation throughputs, mean prompt and completion lengths). Change one and rerun.
Plain Python, no dependencies.
"""
PARAMS = {"qwen2_5_1_5b": 1.54e9, "qwen3_4b": 4.02e9, "qwen3_8b": 8.19e9, "qwen3_14b": 14.8e9,
          "qwen3_32b": 32.8e9, "llama3_1_8b": 8.03e9}
K_UPDATE = 0.216 / (4096 * 1.7e9)   # s per token.param: ANCHORS FullFT fp32-master step, H200, Qwen3-1.7B
CKPT = 1.33                         # gradient checkpointing: one more forward
STEPS, COMPLETIONS = 500, 32 * 16
ROLL = {"vllm": 8000.0, "hf": 1500.0}   # generated tokens/s for Qwen3-8B on one H200, scaled by 8.19e9/N
EVAL_RATE = {"vllm": 20000.0, "hf": 1500.0}
C_HARD, C_MATH = 2500, 800
EVAL_GEN = {"paper_main": 480 * C_HARD + 500 * C_MATH + 400 * C_HARD + 164 * 300 + 541 * 400,
            "paper_math": 480 * C_HARD + 500 * C_MATH + 400 * C_HARD,
            "paper_ablation": 480 * C_HARD + 1000 * C_MATH + 400 * C_HARD,
            "medical": 0, "code": (500 + 164) * 300}
EVAL_LL = {"paper_main": 14042 * 4 * 150, "medical": 1273 * 4 * 250}   # loglikelihood tokens (MMLU, MedQA)
DATA = {"math": (150, 1000), "medqa": (300, 500), "code": (300, 500)}  # (prompt, mean completion) tokens

def train_h(model, data, backend):
    n = PARAMS[model]; p, c = DATA[data]
    roll = COMPLETIONS * c / (ROLL[backend] * 8.19e9 / n)
    upd = K_UPDATE * n * COMPLETIONS * (p + c) * CKPT
    return STEPS * (roll + upd) / 3600

def eval_h(model, ev, backend):
    n = PARAMS[model]
    gen = EVAL_GEN[ev] / (EVAL_RATE[backend] * 8.19e9 / n)
    ll = K_UPDATE / 3 * n * EVAL_LL.get(ev, 0)
    return (gen + ll) / 3600

def job_h(model, data, ev, trained, backend):
    return (train_h(model, data, backend) if trained else 0) + eval_h(model, ev, backend)

TABLES = {  # table: [(model, data, eval, trained?, count)]
  "main (+ efficiency, analysis)": [("qwen3_8b", "math", "paper_main", False, 1), ("qwen3_8b", "math", "paper_main", True, 6)],
  "ablation": [("qwen3_4b", "math", "paper_ablation", True, 5)],
  "domains: medical": [("qwen3_8b", "medqa", "medical", False, 1), ("qwen3_8b", "medqa", "medical", True, 2)],
  "domains: code": [("qwen3_8b", "code", "code", False, 1), ("qwen3_8b", "code", "code", True, 2)],
  "lr": [("qwen3_4b", "math", "paper_math", True, 16)],
  "rank x rho": [("qwen3_4b", "math", "paper_math", True, 9)],
  "sizes": [(m, "math", "paper_math", False, 1) for m in PARAMS] + [(m, "math", "paper_math", True, 4) for m in PARAMS],
}
for m in ("qwen3_4b", "qwen3_8b", "qwen3_32b"):
    n = PARAMS[m]; p, c = DATA["math"]
    print(m, "per step: rollout vllm %.0f s, hf %.0f s, update %.0f s" % (
        COMPLETIONS * c / (ROLL["vllm"] * 8.19e9 / n), COMPLETIONS * c / (ROLL["hf"] * 8.19e9 / n),
        K_UPDATE * n * COMPLETIONS * (p + c) * CKPT),
        "| run vllm %.1f h, hf %.1f h | eval paper_main vllm %.2f h hf %.2f h" % (
        train_h(m, "math", "vllm"), train_h(m, "math", "hf"), eval_h(m, "paper_main", "vllm"), eval_h(m, "paper_main", "hf")))
tot = {"vllm": 0, "hf": 0}
for t, jobs in TABLES.items():
    n = sum(j[-1] for j in jobs)
    h = {b: sum(cnt * job_h(m, d, e, tr, b) for m, d, e, tr, cnt in jobs) for b in ("vllm", "hf")}
    for b in h: tot[b] += h[b]
    print(f"| {t} | {n} | {h['vllm']:,.0f} | {h['hf']:,.0f} |")
print("total", {b: round(v) for b, v in tot.items()})
