"""analysis.tables on run folders written here in run.py's results.json format."""
import json

import pytest

from analysis.tables import collect_runs, main, paper_comparison, summary_table


def _write_run(root, method, seed, scores, status="finished", model="qwen3_8b"):
    d = root / model / method / f"seed{seed}"
    d.mkdir(parents=True)
    rec = {"status": status, "method": method, "model": model, "data": "deepmath_103k",
           "seed": seed, "train": {"reward_start": 0.2, "reward_end": 0.5},
           "eval_before": {"aime24": 10.0}, "eval": scores, "env": {"packages": {}}}
    (d / "results.json").write_text(json.dumps(rec))


def test_collect_summarise_and_compare(tmp_path):
    _write_run(tmp_path, "geora", 0, {"aime24": 20.0, "mmlu": 70.0})
    _write_run(tmp_path, "geora", 1, {"aime24": 30.0, "mmlu": 72.0})
    _write_run(tmp_path, "lora", 0, {"aime24": 15.0})
    _write_run(tmp_path, "pissa", 0, {}, status="failed")
    runs = collect_runs(tmp_path)
    assert len(runs) == 4 and "env" not in runs.columns

    table = summary_table(runs)
    assert table.loc[("qwen3_8b", "deepmath_103k", "geora"), "eval.aime24"] == 25.0
    assert table.loc[("qwen3_8b", "deepmath_103k", "geora"), "n_seeds"] == 2
    assert ("qwen3_8b", "deepmath_103k", "pissa") not in table.index  # failed runs left out

    cmp = paper_comparison(runs, "main_math").set_index(["method", "benchmark"])
    assert cmp.loc[("GeoRA", "AIME24"), "paper"] == 23.75
    assert cmp.loc[("GeoRA", "AIME24"), "ours"] == 25.0
    assert cmp.loc[("GeoRA", "AIME24"), "ours_n"] == 2
    assert cmp.loc[("LoRA", "AIME24"), "ours"] == 15.0
    assert cmp.loc[("Base", "AIME24"), "ours"] == 10.0           # from eval_before
    assert cmp.loc[("PiSSA", "AIME24"), "ours_n"] == 0            # failed: no number


def test_unknown_table_and_missing_folder(tmp_path):
    _write_run(tmp_path, "geora", 0, {"aime24": 20.0})
    with pytest.raises(ValueError, match="main_math"):
        paper_comparison(collect_runs(tmp_path), "nope")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        collect_runs(tmp_path / "nowhere")


def test_cli_writes_csv(tmp_path, capsys):
    _write_run(tmp_path, "geora", 0, {"aime24": 20.0})
    main([str(tmp_path), "--table", "main_math", "--out", str(tmp_path / "t")])
    assert (tmp_path / "t" / "main_math.csv").is_file()
    assert "23.75" in capsys.readouterr().out


def test_figures_from_runs(tmp_path):
    import numpy as np

    from analysis.figures import main as figures_main, smooth

    assert np.allclose(smooth([1, 3, 5, 7], 2), [1, 2, 4, 6])
    runs = tmp_path / "runs"
    _write_run(runs, "geora", 0, {"micro_math": 40.0})
    rec_path = runs / "qwen3_8b" / "geora" / "seed0" / "results.json"
    rec = json.loads(rec_path.read_text())
    rec["train"]["reward_per_step"] = [0.1, 0.2, 0.4, 0.5]
    rec_path.write_text(json.dumps(rec))
    figures_main([str(runs), "--out", str(tmp_path / "fig"), "--window", "2"])
    for name in ("reward_curves.png", "eval_scores.png"):
        assert (tmp_path / "fig" / name).stat().st_size > 1000


def test_evaluation_results_inside_a_run_are_not_runs(tmp_path):
    _write_run(tmp_path, "geora", 0, {"aime24": 20.0})
    ev = tmp_path / "qwen3_8b" / "geora" / "seed0" / "eval"
    ev.mkdir()
    (ev / "results.json").write_text(json.dumps({"scores": {"aime24": 20.0}}))
    assert len(collect_runs(tmp_path)) == 1


def test_runs_of_one_method_with_different_learning_rates_stay_apart(tmp_path):
    for seed, lr in ((0, 1e-4), (1, 5e-4)):
        _write_run(tmp_path, "pissa", seed, {"aime24": 10.0 * (seed + 1)})
        run = tmp_path / "qwen3_8b" / "pissa" / f"seed{seed}"
        (run / "config.yaml").write_text(f"train:\n  learning_rate: {lr}\nmethod:\n  rank: 16\n  rho: 0.2\n")
    table = summary_table(collect_runs(tmp_path))
    assert len(table) == 2 and sorted(table["eval.aime24"]) == [10.0, 20.0]
