"""scripts/paper_dry_run.py (make paper-dry-run): every paper experiment shrunk onto the CPU,
then every table built and checked for the paper's rows and columns.

The whole dry run (68 jobs, ~35 min on 2 busy cores) is `slow`. The default run keeps one
real shrunk job (GeoRA of the medical experiment, through run.py to its table cell) and the
step from the experiment configs to the tables: one run folder per job of every
sweep, its config.yaml composed from the experiment with the shrink overrides (the swept
keys set per job) and a results.json with made-up numbers for exactly the tasks the job
evaluates; every table must be complete, and one missing run must be named."""
from __future__ import annotations

import importlib.util
import itertools
import json
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from geora.training.rundir import BASE_METHOD, RunFolder

ROOT = Path(__file__).parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("paper_dry_run", ROOT / "scripts" / "paper_dry_run.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


ANALYSIS = {"k": 16, "default_reading": "either", "readings": ["either"],
            "overall": {"s_head": {"either": 0.5}, "s_head_chance": {"either": 0.1},
                        "nss": {"full": 0.2, "topk": 0.2, "delta": 0.2}, "unchanged_frac": 0.5,
                        "zero_frac": 0.5}}
MASKS = {"aggregate": {"frac_a": 0.2, "frac_b": 0.2, "intersection": 0.1, "union": 0.3, "jaccard": 0.33}}


def number(text: str):
    """A swept value as Hydra reads it: an int where it is one (method.rank is typed int)."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def write_sweeps(script, root: Path) -> tuple[int, int]:
    """One run folder per job of every paper experiment (see the module docstring); the
    number of jobs and by how much the shrunk model's narrowest linear layer exceeds the
    largest adapter rank of any job (>= 0: every rank fits)."""
    jobs, spare = 0, []
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        for experiment, (data, _) in script.EXPERIMENTS.items():
            shrunk = compose("config", overrides=[f"experiment={experiment}", *script.SHRINK,
                                                  f"data.local_path=tests/fixtures/train/{data}.jsonl"])
            sweep = script.sweep(experiment)
            for values in itertools.product(*sweep.values()):
                cfg = shrunk.copy()
                for key, value in zip(sweep, values):
                    if key == "model":   # the model file's name under checkpoint=base (the default)
                        key, value = "model.name", f"{value}_base"
                    key = {"method": "method.name"}.get(key, key)
                    OmegaConf.update(cfg, key, value if key.endswith("name") else number(value))
                a = cfg.model.arch     # Qwen3/Llama linears: hidden, heads x head_dim, MLP width
                sides = (a.hidden_size, a.num_attention_heads * a.head_dim,
                         a.num_key_value_heads * a.head_dim, a.intermediate_size)
                spare.append(min(sides) - (cfg.method.get("rank") or 0))
                run = RunFolder(root / experiment / "_".join(values))
                run.write_config(cfg)
                trained = cfg.method.name != BASE_METHOD
                run.write_results({
                    "status": "finished", "method": cfg.method.name, "model": cfg.model.name,
                    "data": cfg.data.name, "seed": cfg.seed, "run_dir": str(run.path),
                    "eval": {task: 10.0 + jobs % 7 for task in cfg.eval.tasks},
                    "train": {"steps": 1, "reward_start": 0.0, "reward_end": 0.5, "step_time_s": 2.0,
                              "peak_memory_gib": 1.0, "trainable_params": 10, "total_params": 100}
                    if trained else None,
                    "env": {"device": {"type": "cpu", "name": "x86_64"}},
                    **({"analysis": ANALYSIS} if trained else {})})
                if cfg.method.name.startswith("geora"):
                    run.adapter.mkdir()
                    (run.adapter / "mask_stats.json").write_text(json.dumps(MASKS))
                jobs += 1
    return jobs, min(spare)


def test_every_job_of_every_experiment_fills_every_table(tmp_path, capsys):
    script = _script()
    jobs, spare = write_sweeps(script, tmp_path)
    assert jobs == 68 and spare >= 0, (jobs, spare)   # paper_sizes: 5 pretrained models x 5 methods
    script.main(["--tables-only", "--out", str(tmp_path)])       # SystemExit on any gap
    assert capsys.readouterr().out.endswith("every paper table has all its rows and columns\n")
    for figure, experiment in script.FIGURES.items():
        assert (tmp_path / "figures" / experiment / f"{figure}.png").is_file()
    # ... and a missing run is named, cell by cell, in every table that needs it
    shutil.rmtree(tmp_path / "paper_main_qwen3_8b" / "sparseft")
    shutil.rmtree(tmp_path / "paper_sizes" / "llama3_1_8b_geora")
    shutil.rmtree(tmp_path / "paper_lr_qwen3_4b" / "milora_1e-3")
    gaps = script.build(tmp_path, ("main", "efficiency", "analysis", "sizes", "lr"), with_figures=False)
    assert sorted({g.split(" / ")[0] for g in gaps}) == [
        "efficiency: sparseft", "lr: milora", "main: sparseft", "sizes: geora"], gaps
    # main's 7 benchmarks, efficiency's 6 columns, sizes' 4 math scores, lr's 5 sections
    assert len(gaps) == 7 + 6 + 4 + 5, gaps
    assert all("llama3_1_8b" in g for g in gaps if g.startswith("sizes"))
    assert all("lr=0.001" in g for g in gaps if g.startswith("lr"))


def test_one_real_job_fills_its_cells_and_the_check_names_the_rest(tmp_path, capsys):
    """GeoRA alone of the medical experiment: its MedQA cell holds a number; the check fails
    naming LoRA's cells and the code half (not run), and nothing of GeoRA's MedQA."""
    script = _script()
    with pytest.raises(SystemExit) as exit_:
        script.main(["--experiments", "paper_medical_qwen3_8b", "--override", "method=geora",
                     "--out", str(tmp_path)])
    gaps = str(exit_.value).splitlines()[1:]
    assert sorted(g.strip() for g in gaps) == sorted([
        "paper_code_qwen3_8b: not run",
        "domains: geora / MBPP (code RLVR): no number",
        "domains: lora / MBPP (code RLVR): no number",
        "domains: lora / MedQA (medical RLVR): no number"]), gaps
    out = capsys.readouterr().out
    assert "| GeoRA | paper |" in out and "(n=1)" in out          # the printed table
    results = json.loads((tmp_path / "paper_medical_qwen3_8b" / "geora" / "results.json").read_text())
    assert results["status"] == "finished" and set(results["eval"]) == {"medqa", "medqa_loglik"}


@pytest.mark.slow
def test_every_paper_experiment_and_table(tmp_path):
    """make paper-dry-run: 68 shrunk jobs (~35 min on a busy 2-core CPU), then every table."""
    _script().main(["--out", str(tmp_path)])     # raises SystemExit naming any gap
    for table in ("main", "ablation", "domains", "efficiency", "analysis", "lr", "sizes"):
        assert (tmp_path / "tables" / f"{table}.csv").is_file(), table
