"""scripts/bench_step.py and scripts/bench_rollouts.py run end to end on tiny sizes and
write self-describing JSON (ratios against the reference measured in the same run).

    .venv/bin/python -m pytest -q tests/test_bench_step.py
"""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_in_subprocess(argv):
    """Runs bench_step.main(argv) in a fresh interpreter and fails if the run imported TRL,
    Hydra or lm-eval (the script must work where only torch/transformers/peft exist)."""
    code = ("import runpy, sys\n"
            f"sys.argv = ['bench_step.py'] + {argv!r}\n"
            "runpy.run_path('scripts/bench_step.py', run_name='__main__')\n"
            "bad = [m for m in ('trl', 'hydra', 'lm_eval') if m in sys.modules]\n"
            "assert not bad, f'imported {bad}'\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("grpo", [False, True], ids=["update", "grpo"])
def test_bench_step_tiny(tmp_path, grpo):
    out = tmp_path / "step.json"
    argv = ["--config", "tiny", "--steps", "1", "--warmup", "0", "--device", "cpu", "--threads", "1",
            "--methods", "fullft,lora_peft,geora_fast", "--json", str(out)] + (["--grpo"] if grpo else [])
    if grpo:
        load_script("bench_step").main(argv)
    else:
        run_in_subprocess(argv)
    saved = json.loads(out.read_text())
    assert saved["benchmark"] == ("grpo_step" if grpo else "train_step")
    assert saved["reference"] == "fullft" and list(saved["methods"]) == ["fullft", "lora_peft", "geora_fast"]
    ref, fast = saved["methods"]["fullft"], saved["methods"]["geora_fast"]
    assert ref["step_ratio"] == 1.0 and ref["memory_estimate_ratio"] == 1.0
    assert fast["step_s"] > 0 and fast["trainable_params"] < ref["trainable_params"]
    # adapters hold no weight gradients nor optimizer state for the base: less memory
    assert fast["memory_estimate_gib"] < ref["memory_estimate_gib"]
    if grpo:
        assert fast["generation_s"] > 0 and fast["update_s"] > 0


def test_bench_step_rejects_bad_input():
    bench = load_script("bench_step")
    with pytest.raises(SystemExit):
        bench.parse_args(["--methods", "fullft,nope", "--device", "cpu"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--methods", "fullft_amp", "--precision", "fp32", "--device", "cpu"])


def test_bench_rollouts_tiny(tmp_path):
    bench = load_script("bench_rollouts")
    out = tmp_path / "rollouts.json"
    result = bench.main(["--methods", "lora,sparseft", "--prompts", "2", "--tokens", "2",
                         "--repeats", "1", "--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved["weights_bitwise_restored"] is True
    assert set(saved["results"]) == {"plain", "plain/control", "lora/unmerged", "lora/merged",
                                     "sparseft/unmerged", "sparseft/merged"}
    assert saved["results"]["plain"]["wall"]["ratio_to_plain"] == 1.0
    assert result["results"].keys() == saved["results"].keys()
