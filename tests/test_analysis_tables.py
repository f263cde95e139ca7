"""analysis.tables: run folders -> runs frame -> the paper's tables, ours beside its numbers.

Synthetic run folders (tests/table_runs.py) in run.py's results.json format; no training.
    .venv/bin/python -m pytest -q tests/test_analysis_tables.py tests/test_paper_tables.py
"""
import json
import re

import pandas as pd
import pytest
from table_runs import write_run

from analysis import render
from analysis.paper_tables import (ABLATION_AVG, LABELS, PAPER_METHODS, TABLES, ablation_avg_check,
                                   build_table, paper_rows)
from analysis.runs import base_evaluations, summary_table, variants
from analysis.tables import collect_runs, main

PAPER_TABLE = {"main": "main_math", "ablation": "ablation", "domains": "domains",
               "efficiency": "efficiency", "analysis": "analysis"}


def cells(table) -> pd.DataFrame:
    return table.frame().set_index(["block", "section", "row", "source", "column"])


def cell(table, row, column, source="ours", section="") -> str:
    f = table.frame()
    sel = f[(f.row == row) & (f.column == column) & (f.source == source) & (f.section == section)]
    assert len(sel) == 1, (row, column, source, sel)
    return sel.iloc[0]


# ----------------------------------------------------------------------------- collection
def test_collect_runs_keeps_its_columns_and_only_the_overall_analysis(tmp_path):
    analysis = {"schema": 1, "k": 16, "default_reading": "either", "readings": ["either"],
                "overall": {"s_head": {"either": 0.9}, "nss": {"full": 0.1}},
                "by_layer": {"0": {"s_head": {"either": 0.8}}}, "by_type": {"q": {}},
                "modules": {"model.layers.0.q_proj": {"s_head": {"either": 0.7}}}}
    write_run(tmp_path, "geora", 0, {"aime24": 20.0}, analysis=analysis, config={"eval.limit": 2})
    write_run(tmp_path, "pissa", 0, status="failed")
    runs = collect_runs(tmp_path).set_index("method")
    for col in ("model", "data", "seed", "status", "train.reward_end", "train.step_time_s",
                "eval.aime24", "eval_before.aime24", "lr", "rank", "rho", "run_dir", "settings"):
        assert col in runs.columns, col
    assert runs.loc["geora", "analysis.overall.s_head.either"] == 0.9
    assert runs.loc["geora", "analysis.default_reading"] == "either"
    assert not [c for c in runs.columns if c.startswith(("analysis.by_", "analysis.modules", "env"))]
    assert runs.loc["geora", "lr"] == 1e-4 and runs.loc["geora", "device"] == "cuda NVIDIA H200 x1"
    assert runs.loc["pissa", "data"] == "deepmath_103k"          # a failed run's data, from its config
    settings = runs.loc["geora", "settings"]
    assert settings["eval.limit"] == 2 and "seed" not in settings and "logger.name" not in settings


def test_unknown_table_and_missing_folder(tmp_path, capsys):
    write_run(tmp_path, "geora", 0, {"aime24": 20.0})
    with pytest.raises(ValueError, match="unknown table 'nope'; choose one of runs, main"):
        build_table("nope", collect_runs(tmp_path))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        collect_runs(tmp_path / "nowhere")
    with pytest.raises(SystemExit, match="--model 'qwen3_14b': no run of that model"):
        main([str(tmp_path), "--table", "main", "--model", "qwen3_14b"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match="no run folder"):
        main([str(empty)])

def test_evaluation_results_inside_a_run_are_not_runs(tmp_path):
    run = write_run(tmp_path, "geora", 0, {"aime24": 20.0})
    (run.path / "eval").mkdir()
    (run.path / "eval" / "results.json").write_text(json.dumps({"scores": {"aime24": 20.0}}))
    assert len(collect_runs(tmp_path)) == 1


def test_summary_table_means_and_splits_by_settings(tmp_path):
    write_run(tmp_path, "geora", 0, {"aime24": 20.0})
    write_run(tmp_path, "geora", 1, {"aime24": 30.0})
    write_run(tmp_path, "geora", 2, {"aime24": 90.0}, config={"eval.limit": 2}, name="geora_limit2")
    write_run(tmp_path, "pissa", 0, status="failed")
    table = summary_table(collect_runs(tmp_path)).reset_index()
    geora = table[table["method"] == "geora"].set_index("variant")
    assert geora.loc["eval.limit=None", "eval.aime24"] == 25.0 and geora.loc["eval.limit=None", "n_seeds"] == 2
    assert geora.loc["eval.limit=2", "eval.aime24"] == 90.0
    assert "pissa" not in set(table["method"])                     # failed: no scores


# ---------------------------------------------------------------------------- every table
@pytest.mark.parametrize("name", list(TABLES))
def test_every_table_renders_the_papers_rows_and_columns_when_runs_are_missing(tmp_path, name):
    write_run(tmp_path, "dora", 0, {"micro_math": 40.0}, model="micro", data="micro_math")
    for runs in (collect_runs(tmp_path), pd.DataFrame()):
        if name == "premise":   # the rule: no full-update run, one line, no table
            with pytest.raises(ValueError, match=r"needs runs of a full-update method"):
                build_table(name, runs)
            continue
        table = build_table(name, runs)
        frame = table.frame()
        assert set(frame["table"]) == ({name} if name != "runs" or len(runs) else set())
        if name in PAPER_TABLE:
            paper = paper_rows(PAPER_TABLE[name])
            shown = frame[frame.source == "paper"]
            for _, p in paper.iterrows():                         # each printed number, in its cell
                label = LABELS[PAPER_METHODS[p["method"]]]
                texts = set(shown[shown.row == label]["text"])
                assert any(p["score"] in t for t in texts), (label, p["benchmark"], p["score"])
            for label in {LABELS[PAPER_METHODS[m]] for m in paper["method"]}:
                ours = frame[(frame.row == label) & (frame.source == "ours")]
                assert len(ours) and set(ours["text"]) == {"missing"}, label
        for fmt in (render.markdown, render.latex, render.csv):
            assert fmt(table)


def test_main_table_rows_columns_base_and_sparseft(tmp_path):
    for seed in range(3):
        write_run(tmp_path, "geora", seed, {"aime24": [57.5, 59.0, 58.0][seed], "math500": 78.0},
                  before={"aime24": 13.0, "math500": 71.0})
        write_run(tmp_path, "sparseft", seed, {"aime24": 50.0 + seed}, before={"aime24": 13.0, "math500": 71.0})
    write_run(tmp_path, "milora", 0, status="failed")
    table = build_table("main", collect_runs(tmp_path))
    f = table.frame()
    assert list(dict.fromkeys(f.row)) == ["Base", "FullFT", "LoRA", "PiSSA", "MiLoRA", "SparseFT", "GeoRA"]
    assert list(dict.fromkeys(f.column)) == ["AIME24", "AIME25", "MATH500", "OlymMATH", "HumanEval", "MMLU", "IFEval"]
    geora = cell(table, "GeoRA", "AIME24")
    assert geora["text"] == "58.17 ± 1.90 (n=3)"            # t_{0.975,2} = 4.3027, sd = 0.7638
    assert geora["high"] - geora["value"] == pytest.approx(4.302653 * 0.763763 / 3 ** 0.5, abs=1e-5)
    assert cell(table, "GeoRA", "AIME24", "paper")["text"] == "23.75"
    assert cell(table, "GeoRA", "MATH500")["text"] == "78.00 ± 0.00 (n=3)"
    # Base: six runs evaluated the same untrained model the same way: one evaluation, not six
    assert cell(table, "Base", "AIME24")["text"] == "13.00 (n=1)"
    assert cell(table, "Base", "AIME25")["text"] == "missing"
    assert cell(table, "SparseFT", "AIME24")["text"] == "51.00 ± 2.48 (n=3)"
    assert cell(table, "MiLoRA", "AIME24")["text"] == "missing"
    assert any("failed run (MiLoRA, seed 0)" in n for n in table.notes)
    assert not len(f[(f.row == "Base") & (f.source.str.startswith("Δ"))])     # Base has no seeds


def test_paired_difference_to_geora_sign_interval_and_shared_seeds(tmp_path):
    for seed, (g, lo, pi, mi) in enumerate([(20.0, 15.0, 23.0, 19.0), (22.0, 18.0, 20.0, 21.0),
                                            (24.0, 19.0, 23.5, 21.0)]):
        write_run(tmp_path, "geora", seed, {"aime24": g})
        write_run(tmp_path, "lora", seed, {"aime24": lo})
        write_run(tmp_path, "pissa", seed, {"aime24": pi})
        write_run(tmp_path, "milora", seed, {"aime24": mi})
        write_run(tmp_path, "fullft", seed, {"aime24": 2 * g - mi})        # +1, +1, +3
    write_run(tmp_path, "lora", 7, {"aime24": 99.0})                 # no GeoRA seed 7: not paired
    table = build_table("main", collect_runs(tmp_path))
    lora = cell(table, "LoRA", "AIME24", "Δ vs GeoRA")
    assert lora["value"] == pytest.approx(-14 / 3) and lora["n"] == 3
    assert -5.0 <= lora["low"] <= lora["value"] <= lora["high"] <= -4.0
    assert lora["text"].startswith("-4.67 [") and lora["text"].endswith("(n=3) *")      # resolved
    pissa = cell(table, "PiSSA", "AIME24", "Δ vs GeoRA")          # differences +3, -2, -0.5
    assert pissa["value"] == pytest.approx(0.5 / 3) and pissa["low"] < 0 < pissa["high"]
    assert not pissa["text"].endswith("*")
    milora = cell(table, "MiLoRA", "AIME24", "Δ vs GeoRA")        # -1, -1, -3: the bootstrap alone
    assert milora["high"] < 0 < milora["t_high"] and not milora["text"].endswith("*")   # is not enough
    fullft = cell(table, "FullFT", "AIME24", "Δ vs GeoRA")
    assert fullft["t_low"] < 0 < fullft["low"] and not fullft["text"].endswith("*")
    assert cell(table, "LoRA", "AIME24")["n"] == 4                 # ours: every seed it ran


def test_a_run_of_another_learning_rate_is_not_averaged_with_the_default(tmp_path):
    write_run(tmp_path, "pissa", 0, {"aime24": 10.0}, lr=1e-4)
    write_run(tmp_path, "pissa", 1, {"aime24": 12.0}, lr=1e-4)
    write_run(tmp_path, "pissa", 0, {"aime24": 30.0}, lr=5e-4)
    write_run(tmp_path, "geora", 0, {"aime24": 20.0}, config={"eval.limit": 2})
    write_run(tmp_path, "geora", 1, {"aime24": 40.0})
    table = build_table("main", collect_runs(tmp_path))
    assert cell(table, "PiSSA [lr=0.0001]", "AIME24")["text"] == "11.00 ± 12.71 (n=2)"
    assert cell(table, "PiSSA [lr=0.0005]", "AIME24")["text"] == "30.00 (n=1)"
    assert cell(table, "GeoRA [eval.limit=2]", "AIME24")["text"] == "20.00 (n=1) [limit 2]"  # marked
    assert cell(table, "GeoRA [eval.limit=None]", "AIME24")["text"] == "40.00 (n=1)"
    assert not (table.frame()["value"] == pytest.approx(52 / 3)).any()
    assert any("PiSSA runs differ in settings" in n for n in table.notes)


def test_later_evaluations_fill_columns_and_their_settings_split_runs(tmp_path):
    from geora.evaluation.harness import SUMMARY_FILE

    for seed, limit in ((0, None), (1, None), (2, 50)):
        run = write_run(tmp_path, "geora", seed, {"aime24": 20.0})
        with run.new_evaluation("paper_ood") as folder:
            (folder / SUMMARY_FILE).write_text(json.dumps(
                {"scores": {"humaneval": 80.0 + seed}, "eval": {"name": "paper_ood", "limit": limit,
                                                                "tasks": ["humaneval"], "num_threads": seed}}))
    runs = collect_runs(tmp_path)
    assert list(runs["eval.humaneval"]) == [80.0, 81.0, 82.0] and "evals.paper_ood.humaneval" in runs
    table = build_table("main", runs)
    assert cell(table, "GeoRA [evals.paper_ood.limit=None]", "HumanEval")["text"] == "80.50 ± 6.35 (n=2)"
    assert cell(table, "GeoRA [evals.paper_ood.limit=50]", "HumanEval")["text"] == "82.00 (n=1) [limit 50]"


def test_variants_label_what_differs_and_ignore_what_does_not_matter():
    runs = pd.DataFrame({"seed": [0, 1, 2], "settings": [
        {"train.learning_rate": 1e-4, "method.rank": 8}, {"train.learning_rate": 1e-4, "method.rank": 16},
        {"train.learning_rate": 1e-4, "method.rank": 8}]})
    assert [(lab, list(p.seed)) for lab, p in variants(runs)] == [("rank=8", [0, 2]), ("rank=16", [1])]
    assert [lab for lab, _ in variants(runs, ignore=["method.*"])] == [""]


def test_base_comes_from_base_runs_where_recorded_else_from_eval_before(tmp_path):
    for seed in range(3):
        write_run(tmp_path, "geora", seed, {"aime24": 20.0}, before={"aime24": 13.0})
    write_run(tmp_path, "lora", 0, {"aime24": 18.0}, before={"aime24": 13.0}, config={"eval.repeats": 4})
    base = base_evaluations(collect_runs(tmp_path))
    assert len(base) == 2 and set(base["eval.aime24"]) == {13.0}   # two evaluation settings
    table = build_table("main", collect_runs(tmp_path))
    assert {r for r in table.frame().row if r.startswith("Base [")} == \
        {"Base [eval.repeats=4]", "Base [eval.repeats=None]"}
    write_run(tmp_path, "base", 0, {"aime24": 14.5}, name="base")     # a recorded Base evaluation
    table = build_table("main", collect_runs(tmp_path))
    assert cell(table, "Base", "AIME24")["text"] == "14.50 (n=1)"


def test_ablation_avg_reward_and_the_papers_avg():
    check = ablation_avg_check()
    # within rounding (0.01: the Avg's and the scores' own) for GeoRA, w/o M_Spec, w/o M_Euc
    assert sorted(check.index[check["difference"].abs() <= 0.01]) == ["GeoRA", "w/o M_Euc", "w/o M_Spec"]
    assert check.loc["Random-r Init", "difference"] == pytest.approx(0.0125)
    assert check.loc["Tail-r Init", "difference"] == pytest.approx(-0.2175)


def test_ablation_table_avg_is_the_mean_of_the_four_math_scores_per_run(tmp_path):
    full = {"aime24": 10.0, "aime25": 8.0, "math500": 70.0, "olymmath": 4.0}
    write_run(tmp_path, "geora", 0, full, model="qwen3_4b", train={"reward_end": 0.8})
    write_run(tmp_path, "geora", 1, {**full, "aime24": 14.0}, model="qwen3_4b", train={"reward_end": 0.9})
    write_run(tmp_path, "geora_tail_r", 0, {"aime24": 9.0}, model="qwen3_4b")   # three scores missing
    write_run(tmp_path, "lora", 0, full, model="qwen3_4b")                  # not an ablation row
    table = build_table("ablation", collect_runs(tmp_path))
    assert cell(table, "GeoRA", "Avg")["value"] == pytest.approx((23.0 + 24.0) / 2)
    assert cell(table, "GeoRA", "Avg", "paper")["text"] == "25.41"
    assert cell(table, "GeoRA", "Reward")["text"] == "0.85 ± 0.64 (n=2)"
    assert cell(table, "Tail-r Init", "Avg")["text"] == "missing"
    assert "LoRA" not in set(table.frame().row)
    assert any("other methods not in this table: lora" in n for n in table.notes)
    assert [list(ABLATION_AVG)] == [["AIME24", "AIME25", "MATH500", "OlymMATH"]]


def test_domains_read_each_column_from_its_own_training_data(tmp_path):
    write_run(tmp_path, "geora", 0, {"medqa": 70.0}, data="medqa")
    write_run(tmp_path, "geora", 0, {"mbpp": 80.0, "medqa": 5.0}, data="kodcode_light_rl_10k")
    write_run(tmp_path, "lora", 0, {"mbpp": 78.0}, data="kodcode_light_rl_10k")
    table = build_table("domains", collect_runs(tmp_path))
    assert cell(table, "GeoRA", "MedQA (medical RLVR)")["text"] == "70.00 (n=1)"
    assert cell(table, "GeoRA", "MBPP (code RLVR)")["text"] == "80.00 (n=1)"
    assert cell(table, "LoRA", "MedQA (medical RLVR)")["text"] == "missing"
    assert cell(table, "LoRA", "MBPP (code RLVR)", "Δ vs GeoRA")["text"] == "-2.00 (n=1, n/a)"
    assert cell(table, "LoRA", "MBPP (code RLVR)", "paper")["text"] == "81.00"


# ------------------------------------------------------------------------------ rendering
def test_latex_markdown_and_csv_escape_and_agree(tmp_path):
    write_run(tmp_path, "geora_wo_spec", 0, {"aime24": 12.0}, model="qwen3_4b")
    write_run(tmp_path, "geora", 0, {"aime24": 13.0}, model="qwen3_4b")
    write_run(tmp_path, "geora", 1, {"aime24": 15.0}, model="qwen3_4b")
    table = build_table("ablation", collect_runs(tmp_path))
    tex = render.latex(table)
    assert r"w/o M\_Spec" in tex and r"14.00 $\pm$ 12.71 (n=2)" in tex and r"\toprule" in tex
    body = [line for line in tex.splitlines() if not line.startswith("%")]
    assert not [line for line in body if re.search(r"(?<!\\)[_%#]", line)], "unescaped special character"
    assert r"$\Delta$ vs GeoRA" in tex
    md = render.markdown(table)
    assert "| w/o M_Spec | paper | 0.86 |" in md and "| GeoRA | paper | 0.88 |" in md
    back = pd.read_csv(pd.io.common.StringIO(render.csv(table)))
    assert len(back) == len(table.cells) and "value" in back and "low" in back


def test_cli_prints_markdown_and_writes_md_tex_csv(tmp_path, capsys):
    write_run(tmp_path / "runs", "geora", 0, {"aime24": 20.0})
    main([str(tmp_path / "runs"), "--table", "main_math", "--out", str(tmp_path / "t")])
    out = capsys.readouterr().out
    assert "| GeoRA | paper | 23.75 |" in out and "20.00 (n=1)" in out
    for suffix in ("md", "tex", "csv"):
        assert (tmp_path / "t" / f"main.{suffix}").stat().st_size > 100
    assert not [p for p in (tmp_path / "t").iterdir() if p.name.startswith(".")]   # no temporaries
