"""scripts/gpu_check.py cannot rot: its --cpu-smoke mode runs the init and training steps
here (fast), the whole check at toy size in the slow variant; bad input stops with one line;
the wheel folder installs into a private target; the 8B shape list is Qwen3-8B's 252.

    .venv/bin/python -m pytest -q tests/test_gpu_check.py        (-m slow: every step)
"""
from __future__ import annotations

import importlib.util
import io
import json
import zipfile
from contextlib import redirect_stderr
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)


def check(tmp_path, *args) -> tuple[int, dict | None, str]:
    """(exit code, the JSON record or None, stderr) of one in-process run."""
    out = tmp_path / "record.json"
    err = io.StringIO()
    with redirect_stderr(err):
        rc = gpu_check.main([*args, "--out", str(out), "--work", str(tmp_path / "work")])
    return rc, json.loads(out.read_text()) if out.is_file() else None, err.getvalue()


def fake_wheel(folder: Path, dist: str, version: str) -> Path:
    """A minimal pure-Python wheel: one module `probe_<dist>` and its metadata."""
    name = dist.replace("-", "_")
    info = f"{name}-{version}.dist-info"
    path = folder / f"{name}-{version}-py3-none-any.whl"
    files = {f"probe_{name}.py": "VALUE = 1\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                              "Tag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{f},,\n" for f in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for f, text in files.items():
            z.writestr(f, text)
    return path


def wheel_set(folder: Path) -> dict[str, str]:
    folder.mkdir()
    pins = gpu_check.pins()
    wanted = {d: pins[gpu_check.norm(d)] for d in gpu_check.NEEDED.values()}
    for dist, version in wanted.items():
        fake_wheel(folder, dist, version)
    return wanted


def test_bad_input_one_line_nothing_written(tmp_path):
    rc, record, err = check(tmp_path, "--cpu-smoke", "--wheels", str(tmp_path / "nowhere"))
    assert rc == 2 and record is None and err.count("\n") == 1
    assert "--wheels" in err and "no such folder" in err and "fetch_gpu_wheels.sh" in err
    wheels = tmp_path / "wheels"
    wheel_set(wheels)
    (wheels / next(p.name for p in wheels.glob("trl-*"))).unlink()
    rc, record, err = check(tmp_path, "--cpu-smoke", "--wheels", str(wheels))
    assert rc == 2 and record is None and "has no wheel for trl " in err and err.count("\n") == 1
    fake_wheel(wheels, "trl", "0.0.1")                      # not the pinned version
    rc, record, err = check(tmp_path, "--cpu-smoke", "--wheels", str(wheels))
    assert rc == 2 and "trl 0.0.1 (constraints.txt: " in err and err.count("\n") == 1
    rc, record, err = check(tmp_path, "--steps", "wheels,lunch")
    assert rc == 2 and "unknown 'lunch'" in err
    assert not (tmp_path / "work").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_the_gpu_mode_needs_cuda(tmp_path):
    rc, record, err = check(tmp_path, "--steps", "init")
    assert rc == 2 and record is None and err.count("\n") == 1
    assert "needs CUDA" in err and "--cpu-smoke" in err


def test_wheels_install_into_a_private_target(tmp_path):
    wanted = wheel_set(tmp_path / "wheels")
    rc, record, _ = check(tmp_path, "--cpu-smoke", "--steps", "wheels",
                          "--wheels", str(tmp_path / "wheels"))
    step = record["steps"]["wheels"]
    assert rc == 0 and record["passed"] and step["passed"], step
    assert step["installed"] == {gpu_check.norm(d): v for d, v in wanted.items()}
    site = tmp_path / "work" / "site"
    assert (site / "probe_trl.py").is_file() and (site / "probe_hydra_core.py").is_file()


def test_qwen3_8b_has_252_target_shapes():
    import yaml

    arch = yaml.safe_load((ROOT / "conf/model/qwen3_8b.yaml").read_text())["arch"]
    shapes = gpu_check.target_shapes(arch)
    assert len(shapes) == 252
    kinds = {name.rsplit(".", 1)[-1]: shape for name, shape in shapes}
    assert kinds == {"q_proj": (4096, 4096), "k_proj": (1024, 4096), "v_proj": (1024, 4096),
                     "o_proj": (4096, 4096), "gate_proj": (12288, 4096),
                     "up_proj": (12288, 4096), "down_proj": (4096, 12288)}


def test_gpu_mode_trains_bf16_and_fullft_in_fp32_master_weights():
    """What the GPU run will be given (checked here: it cannot run here)."""
    tok, run = Path("/tok"), Path("/run")
    lora = gpu_check.train_overrides("lora", False, tok, run)
    full = gpu_check.train_overrides("fullft", False, tok, run)
    for o in (lora, full):
        assert {"device=cuda", "train.max_steps=3", "train.bf16=true", "model=qwen3_0_6b",
                "model.random_init=true", "model.tokenizer_path=/tok", "eval=none"} <= set(o)
    assert "model.dtype=bfloat16" in lora and "model.dtype=float32" in full


def test_cpu_smoke_init_and_training(tmp_path):
    """The fast share of --cpu-smoke: the 8B-shape init step at toy size and one method's
    run.py through the same overrides (the real Qwen3 tokenizer, the DeepMath fixture)."""
    rc, record, err = check(tmp_path, "--cpu-smoke", "--steps", "init,train",
                            "--methods", "geora")
    assert rc == 0 and record["passed"], (err, record)
    init, train = record["steps"]["init_qwen3_8b_shapes"], record["steps"]["train_geora"]
    assert init["matrices"] == 14 and set(init["median_s"]) == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert train["steps"] == 1 and train["device"]["type"] == "cpu"
    assert train["total_params"] > 151669 * 64          # the real vocabulary's embedding
    config = (tmp_path / "work" / "runs" / "geora" / "config.yaml").read_text()
    assert "qwen3_tokenizer" in config and "deepmath_103k.jsonl" in config


@pytest.mark.slow
def test_cpu_smoke_every_step(tmp_path):
    rc, record, err = check(tmp_path, "--cpu-smoke")
    assert rc == 0 and record["passed"], (err, record["failed"])
    assert set(record["steps"]) == {"wheels", "imports", "pytest_gpu", "init_qwen3_8b_shapes",
                                    *(f"train_{m}" for m in gpu_check.METHODS)}
    assert record["steps"]["pytest_gpu"]["tests"] >= 3
    assert record["versions"]["trl"] and record["device"] == "cpu"
