"""The paper's printed scores against item counts and samples per item
(scripts/paper_granularity.py), and the evaluation defaults that follow from them.

    .venv/bin/python -m pytest -q tests/test_granularity.py
"""
from __future__ import annotations

import importlib.util
import re
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from geora.evaluation.catalog import CATALOG, TASKS_DIR

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("paper_granularity", ROOT / "scripts" / "paper_granularity.py")
pg = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = pg  # dataclasses look their module up there
spec.loader.exec_module(pg)


@pytest.fixture(scope="module")
def fits():
    return {(f.table, f.benchmark): f for f in pg.granularity(pg.read_rows(pg.PAPER_CSV))}


def test_admits_is_rounding_to_two_decimals():
    assert pg.admits(72.20, 500, 1) and not pg.admits(72.10, 500, 1) and pg.admits(72.10, 500, 2)
    assert pg.admits(22.08, 30, 8) and not pg.admits(22.08, 30, 4)    # 53/240 = 22.083
    assert pg.admits(13.33, 30, 1) and not pg.admits(13.34, 30, 1)    # 4/30 = 13.333
    assert pg.admits(0.0, 30, 1) and pg.admits(100.0, 30, 1) and not pg.admits(100.5, 30, 1)


def test_main_table_readings(fits):
    math500 = fits["main_math", "MATH500"]
    assert math500.coarsest[1] == 1 and len(math500.values) == 6
    reading = math500.coarsest[0]
    assert math500.chance_under(reading, 4) == Fraction(1, 4096)    # all six on 0.2 under avg@4
    assert fits["main_math", "AIME24"].coarsest[1] == fits["main_math", "AIME25"].coarsest[1] == 8
    assert fits["main_math", "OlymMATH"].coarsest[0].n_items * fits["main_math", "OlymMATH"].coarsest[1] == 400
    assert fits["main_math", "HumanEval"].coarsest == (pg.READINGS["HumanEval"][0], 1)
    assert fits["main_math", "MMLU"].uninformative
    assert fits["domains", "MedQA"].coarsest[0].n_items == 1273
    assert fits["domains", "MBPP"].coarsest[0].label == "test (500)"


def test_what_fits_nothing(fits):
    ifeval = fits["main_math", "IFEval"]
    assert ifeval.fits_all == [] and ifeval.coarsest is None
    one_sample = {r.n_items: hits for r, k, hits in ifeval.fits_some if k == 1}
    assert one_sample == {541: 1, 834: 1}     # prompt-level and instruction-level: 1 of 6 each
    assert fits["ablation", "AIME25"].fits_all == []    # 8.50 fits no k <= 16 over 30 problems
    assert fits["ablation", "MATH500"].coarsest[1] == 2  # 72.10 needs an even k


def _yaml_key(path: Path, key: str) -> str | None:
    match = re.search(rf"^{key}:\s*(.+)$", path.read_text(), re.MULTILINE)
    return match.group(1).strip() if match else None


@pytest.mark.parametrize("task,benchmark", [("aime24", "AIME24"), ("aime25", "AIME25"),
                                            ("math500", "MATH500"), ("olymmath", "OlymMATH"),
                                            ("humaneval", "HumanEval")])
def test_default_samples_per_item_follow_the_main_table(fits, task, benchmark):
    yaml = TASKS_DIR / f"{CATALOG[task].lm_task}.yaml"
    k = _yaml_key(yaml, "repeats") or _yaml_key(TASKS_DIR / "_code_yaml", "repeats")
    assert int(k) == fits["main_math", benchmark].coarsest[1]
    if task == "olymmath":
        assert _yaml_key(yaml, "dataset_name") == "en-hard"   # 100 problems x 4


def test_recorded_metrics_exist_in_their_tasks():
    """Each headline and extra "metric,filter" key is one the task's lm-eval YAML produces."""
    site = Path(importlib.util.find_spec("lm_eval").submodule_search_locations[0]) / "tasks"
    sources = {"ifeval": site / "ifeval" / "ifeval.yaml", "medqa_4options": site / "medqa" / "medqa.yaml"}
    for info in CATALOG.values():
        if info.lm_task == "mmlu":
            continue  # a group of 57 subject tasks, acc only
        path = sources.get(info.lm_task, TASKS_DIR / f"{info.lm_task}.yaml")
        text = path.read_text()
        for parent in re.findall(r"^include:\s*(\S+)", text, re.MULTILINE):
            text += (path.parent / parent).read_text()
        metrics = set(re.findall(r"- metric:\s*(\w+)", text))
        filters = set(re.findall(r"- name:\s*(\w+)", text)) or {"none"}
        for key in (info.metric, *info.extra_metrics):
            metric, filt = key.split(",")
            assert metric in metrics and filt in filters, (info.name, key, metrics, filters)
    assert len(CATALOG["ifeval"].extra_metrics) == 3   # all four IFEval readings recorded


def test_script_prints_the_table(capsys, tmp_path):
    assert pg.main([]) == 0
    out = capsys.readouterr().out
    assert "| main_math | MATH500 | 71.20, 78.40" in out and "k=4: 1 in 4,096" in out
    assert "| main_math | IFEval |" in out and "**none**" in out
    bad = tmp_path / "bad.csv"
    bad.write_text("table,method,value\nmain_math,GeoRA,1\n")
    with pytest.raises(ValueError, match="needs columns"):
        pg.main(["--csv", str(bad)])
