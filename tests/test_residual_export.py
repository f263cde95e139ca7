"""GeoRA for other RL trainers: `--export residual` writes a transformers model (W_res) and a
PEFT LoRA (A0, B0) that plain transformers + PEFT load into the original model, in a process
that cannot import this project; `python -m geora.convert` turns an adapter trained on them
into a plain LoRA on the ORIGINAL model.

Run: .venv/bin/python -m pytest -q tests/test_residual_export.py
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors import safe_open
from transformers import AutoModelForCausalLM

import geora
from geora import convert, preprocess
from geora.kinds import NoLoraForm
from geora.kinds.base import NoResidualForm
from geora.models import ASSETS_DIR
from tests.conftest import build_tiny_qwen3

ROOT = Path(__file__).resolve().parents[1]

# Run with `python -I` (no PYTHONPATH, no cwd on sys.path, no user site) and with this
# project's packages blocked: only transformers and PEFT can do the loading.
PLAIN_LOADER = r"""
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("geora", "baselines", "analysis"):
            raise ImportError(f"{name} must not be imported")
sys.meta_path.insert(0, Block())
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
jobs = json.loads(sys.argv[1])
ids = torch.load(jobs["ids"])
for job in jobs["runs"]:
    model = AutoModelForCausalLM.from_pretrained(job["model"], dtype=getattr(torch, job["dtype"]))
    if job.get("adapter"):
        model = PeftModel.from_pretrained(model, job["adapter"])
    with torch.no_grad():
        torch.save(model.eval()(ids).logits.float(), job["out"])
    if job.get("tokenizer"):
        tok = AutoTokenizer.from_pretrained(job["model"])
        json.dump(tok("1 + 2 = 3")["input_ids"], open(job["tokenizer"], "w"))
assert not any(m.split(".")[0] in ("geora", "baselines", "analysis") for m in sys.modules)
"""


def plain_logits(tmp: Path, ids: torch.Tensor, runs: list[dict]) -> list[torch.Tensor]:
    """Logits of each (model, adapter, dtype) run, computed by `python -I` with transformers
    and PEFT only."""
    torch.save(ids, tmp / "ids.pt")
    for i, run in enumerate(runs):
        run["out"] = str(tmp / f"logits{i}.pt")
    res = subprocess.run([sys.executable, "-I", "-c", PLAIN_LOADER,
                          json.dumps({"ids": str(tmp / "ids.pt"), "runs": runs})],
                         capture_output=True, text=True, timeout=600, cwd=tmp,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    return [torch.load(run["out"]) for run in runs]


def model_folder(path: Path, dtype=torch.float32) -> Path:
    """A tiny Qwen3 checkpoint with the micro model's tokenizer files (vocabulary 512)."""
    build_tiny_qwen3().to(dtype).save_pretrained(path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(ASSETS_DIR / "micro" / name, path / name)
    return path


def tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """fp32 and bf16 checkpoints, their residual exports (CLI), and the plain-library logits
    of the original models, the exported pairs and the residual models alone; the logits of
    the same preparation in memory (geora.prepare_model) for comparison."""
    tmp = tmp_path_factory.mktemp("export")
    ids = torch.randint(0, 512, (2, 12), generator=torch.Generator().manual_seed(1))
    out, runs = {}, []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)       # (the autouse one-thread fixture is per test, not module)
    for dtype in ("float32", "bfloat16"):
        src = model_folder(tmp / f"orig_{dtype}", getattr(torch, dtype))
        res = tmp / f"res_{dtype}"
        summary = preprocess.main(["--model", str(src), "--method", "geora", "--rank", "4",
                                   "--out", str(res), "--export", "residual"])
        in_memory = geora.prepare_model(AutoModelForCausalLM.from_pretrained(
            src, dtype=getattr(torch, dtype)), "geora", rank=4).eval()
        with torch.no_grad():
            prepared = in_memory(ids).logits.float()
        out[dtype] = dict(src=src, res=res, summary=summary, prepared=prepared)
        runs += [dict(model=str(src), dtype=dtype),
                 dict(model=str(res / "model"), adapter=str(res / "adapter"), dtype=dtype,
                      tokenizer=str(tmp / f"tok_{dtype}.json")),
                 dict(model=str(res / "model"), dtype=dtype)]
    logits = plain_logits(tmp, ids, runs)
    for i, dtype in enumerate(("float32", "bfloat16")):
        out[dtype].update(original=logits[3 * i], pair=logits[3 * i + 1],
                          residual_only=logits[3 * i + 2],
                          token_ids=json.loads((tmp / f"tok_{dtype}.json").read_text()))
    torch.set_num_threads(threads)
    return dict(out, ids=ids, tmp=tmp)


def test_fp32_pair_reproduces_the_original_model(exported):
    e = exported["float32"]
    assert (e["pair"] - e["original"]).abs().max() <= 1e-5
    assert (e["pair"] - e["prepared"]).abs().max() <= 1e-6
    # the residual model alone is not the original (so the comparison above can fail)
    assert (e["residual_only"] - e["original"]).abs().max() > 1e-3
    assert e["summary"]["export"] == "residual"
    assert sorted(p.name for p in e["res"].iterdir()) == [
        "adapter", "geora_residual.json", "mask_stats.json", "model"]


def test_bf16_pair_within_bf16_rounding(exported):
    """bf16: the pair computes what the prepared model computes in memory (same W_res bits,
    same fp32 A0, B0), and differs from the original bf16 model by the one rounding of W_res
    to bf16: a few bf16 steps (2^-8 relative) of the logits' scale."""
    e = exported["bfloat16"]
    scale = e["original"].abs().max().item()
    diff = (e["pair"] - e["original"]).abs().max().item()
    assert (e["pair"] - e["prepared"]).abs().max() <= 1e-6
    assert diff <= 4 * 2 ** -8 * scale, (diff, scale)
    assert (e["residual_only"] - e["original"]).abs().max() > 10 * diff
    print(f"bf16 pair vs original bf16 model: max |dlogit| {diff:.3g} "
          f"(logits up to {scale:.3g}: {diff / scale / 2 ** -8:.2f} bf16 steps)")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_folder_layout_dtype_and_untouched_weights(exported, dtype):
    e = exported[dtype]
    model_dir, adapter_dir = e["res"] / "model", e["res"] / "adapter"
    assert {"config.json", "tokenizer.json", "tokenizer_config.json",
            "model.safetensors"} <= {p.name for p in model_dir.iterdir()}
    assert e["token_ids"] and isinstance(e["token_ids"][0], int)   # the tokenizer loads
    original, residual = tensors(e["src"] / "model.safetensors"), tensors(model_dir / "model.safetensors")
    assert residual.keys() == original.keys()
    meta = json.loads((e["res"] / "geora_residual.json").read_text())
    targets = {f"{t}.weight" for t in meta["targets"]}
    assert len(targets) == 14 and meta["dtype"] == dtype
    for key, tensor in residual.items():
        assert tensor.dtype == getattr(torch, dtype), key
        if key in targets:
            assert not torch.equal(tensor, original[key]), key                 # W_res
        else:
            assert torch.equal(tensor, original[key]), key                     # untouched
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["init_lora_weights"]) == (4, 4.0, True)
    assert sorted(config["target_modules"]) == sorted(meta["targets"])


def perturbed_adapter(res: Path, out: Path, seed: int = 3, alpha: float | None = None) -> Path:
    """Simulated training elsewhere: the init adapter on the residual model, moved."""
    model = AutoModelForCausalLM.from_pretrained(res / "model", dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(res / "adapter"), is_trainable=True)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    model.save_pretrained(out)
    if alpha is not None:        # trained with another lora_alpha than the init's
        cfg = json.loads((out / "adapter_config.json").read_text())
        (out / "adapter_config.json").write_text(json.dumps(dict(cfg, lora_alpha=alpha)))
    return out


def logits_of(model_dir, adapter_dir, ids):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(adapter_dir)).eval()
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("alpha", [None, 8.0])
def test_convert_trained_adapter_onto_the_original(exported, tmp_path, alpha, capsys):
    e, ids = exported["float32"], exported["ids"]
    trained = perturbed_adapter(e["res"], tmp_path / "trained", alpha=alpha)
    expected = logits_of(e["res"] / "model", trained, ids)          # residual + trained
    assert (expected - e["original"]).abs().max() > 1e-3            # training moved it
    out = convert.main(["--trained", str(trained), "--init", str(e["res"]),
                        "--out", str(tmp_path / "lora")])
    assert json.loads(capsys.readouterr().out)["rank"] == 8
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["base_model_name_or_path"] == str(e["src"].resolve())
    on_original = logits_of(e["src"], out, ids)
    assert (on_original - expected).abs().max() <= 1e-5
    if alpha is None:     # the same r and alpha: exactly export_lora's rank-2r form
        assert config["lora_alpha"] == 8.0
        t, c = tensors(trained / "adapter_model.safetensors"), tensors(out / "adapter_model.safetensors")
        key = next(k for k in t if k.endswith("lora_A.weight"))
        assert torch.equal(c[key][:4], t[key])


def test_convert_bad_input_one_line_nothing_written(exported, tmp_path):
    e = exported["float32"]
    trained = perturbed_adapter(e["res"], tmp_path / "trained")

    def fails(args, match):
        with pytest.raises(SystemExit) as info:
            convert.main(args)
        message = str(info.value)
        assert "\n" not in message and match in message, message
        assert not (tmp_path / "out").exists()

    fails(["--trained", str(trained), "--init", str(tmp_path), "--out", str(tmp_path / "out")],
          "neither a residual export")
    fails(["--trained", str(tmp_path), "--init", str(e["res"]), "--out", str(tmp_path / "out")],
          "not a PEFT adapter folder")
    cut = tmp_path / "cut"                     # an adapter missing one module of the init
    shutil.copytree(trained, cut)
    t = tensors(cut / "adapter_model.safetensors")
    from safetensors.torch import save_file
    save_file({k: v for k, v in t.items() if ".layers.1.mlp.down_proj." not in k},
              str(cut / "adapter_model.safetensors"))
    fails(["--trained", str(cut), "--init", str(e["res"]), "--out", str(tmp_path / "out")],
          "lacks module 'model.layers.1.mlp.down_proj'")
    dora = tmp_path / "dora"
    shutil.copytree(trained, dora)
    cfg = json.loads((dora / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps(dict(cfg, use_dora=True)))
    fails(["--trained", str(dora), "--init", str(e["res"]), "--out", str(tmp_path / "out")],
          "use_dora=True is not a plain LoRA")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_text("x")
    with pytest.raises(SystemExit, match="exists and is not empty"):
        convert.main(["--trained", str(trained), "--init", str(e["res"]),
                      "--out", str(tmp_path / "out")])
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep"]


def test_export_bad_input_one_line_nothing_written(exported, tmp_path, capsys):
    src = exported["float32"]["src"]
    with pytest.raises(SystemExit) as info:        # refused before the model loads
        preprocess.main(["--model", str(src), "--method", "lora", "--out",
                         str(tmp_path / "x"), "--export", "residual"])
    assert "\n" not in str(info.value) and "'lora' (kind 'peft')" in str(info.value)
    assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit, match="exists and is not empty"):
        preprocess.main(["--model", str(src), "--method", "geora", "--out",
                         str(exported["float32"]["res"]), "--export", "residual"])
    # the library function: the same refusals, nothing written
    with pytest.raises(NoResidualForm, match="'sparseft' .*no residual form"):
        geora.export_residual(geora.prepare_model(build_tiny_qwen3(), "sparseft"),
                              tmp_path / "y")
    assert not issubclass(NoResidualForm, NoLoraForm) and issubclass(NoResidualForm, ValueError)
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "keep").write_text("x")
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        geora.export_residual(geora.prepare_model(build_tiny_qwen3(), "pissa", rank=4),
                              tmp_path / "z")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["z"]
    assert [p.name for p in (tmp_path / "z").iterdir()] == ["keep"]
