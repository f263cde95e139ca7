"""The premise table, figures and cost reading from run folders (analysis/premise.py).

    .venv/bin/python -m pytest -q tests/test_premise_tables.py
"""
import json

import pytest
import torch

from analysis import render
from analysis.premise import geometry_cost, premise_frame, premise_per_part, build_premise
from analysis.runs import collect_runs
from analysis.tables import main as tables_main
from geora.geometry.premise import premise_summary
from geora.training.rundir import RunFolder


def _premise(seed: int, head_weight: float) -> dict:
    """A premise section of two matrices whose update is `head_weight` in W0's top pair."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for name in ("model.layers.0.mlp.up_proj", "model.layers.1.self_attn.q_proj"):
        w0 = torch.randn(24, 16, generator=g)
        u, _, vh = torch.linalg.svd(w0)
        dw = head_weight * torch.outer(u[:, 0], vh[0]) + torch.outer(u[:, -1], vh[-1])
        items.append((name, w0, dw))
    s = premise_summary(items, r=2, names=("pissa", "milora", "random"))
    return {k: v for k, v in s.items() if k != "modules"}


def _run(root, method, seed, analysis=None):
    RunFolder(root / f"{method}_seed{seed}").write_results({
        "status": "finished", "method": method, "model": "micro", "data": "micro_math",
        "seed": seed, "train": {"step_time_s": 2.0}, **({"analysis": analysis} if analysis else {})})


def test_the_table_shows_capture_with_chance_over_seeds(tmp_path):
    for seed, w in ((0, 2.0), (1, 3.0)):          # head energy 4/5 and 9/10 of the update
        _run(tmp_path, "fullft", seed, {"premise": _premise(seed, w)})
    _run(tmp_path, "geora", 0, {"overall": {}})
    table = build_premise(collect_runs(tmp_path))
    text = render.markdown(table)
    assert "PiSSA (W0 top-r)" in text and "MiLoRA (W0 bottom-r)" in text and "(n=2)" in text
    cells = table.frame()
    reach = cells[(cells.method == "pissa") & (cells.source == "ours") & (cells.column == "reach")]
    assert float(reach.value.iloc[0]) == pytest.approx((0.8 + 0.9) / 2, abs=1e-4)
    assert float(reach.low.iloc[0]) < 0.85 < float(reach.high.iloc[0])
    chance = cells[(cells.method == "pissa") & (cells.source == "chance") & (cells.column == "left")]
    assert float(chance.value.iloc[0]) == pytest.approx(2 / 24)
    paths = premise_per_part(premise_frame(collect_runs(tmp_path)), tmp_path / "fig" / "p", "by_layer")
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 0 for p in paths)


def test_a_premise_table_without_a_full_update_run_is_one_line(tmp_path, capsys):
    _run(tmp_path, "geora", 0)
    _run(tmp_path, "lora", 0)
    with pytest.raises(SystemExit) as e:
        tables_main([str(tmp_path), "--table", "premise"])
    msg = str(e.value)
    assert msg.count("\n") == 0 and "full-update method (fullft, sparseft)" in msg
    assert "found only: geora, lora" in msg
    _run(tmp_path, "fullft", 0)                 # a FullFT run from before the premise existed
    with pytest.raises(SystemExit, match=r"1 full-update run\(s\) but none has"):
        tables_main([str(tmp_path), "--table", "premise"])


def test_the_cost_is_read_from_the_run(tmp_path):
    _run(tmp_path, "fullft", 0)
    log = RunFolder(tmp_path / "fullft_seed0").log
    lines = [{"step": s, "geometry": {"time_s": t, **({"setup_s": 4.0} if s == 5 else {})}}
             for s, t in ((5, 0.1), (10, 0.3), (15, 0.2))]
    log.write_text("".join(json.dumps(x) + "\n" for x in [{"step": 1, "reward": 0.5}] + lines))
    c = geometry_cost(tmp_path / "fullft_seed0")
    assert (c["records"], c["every"], c["measure_s"]) == (3, 5, 0.2)
    assert c["share_at_every"] == pytest.approx(0.2 / 5 / 2.0)
    assert c["setup_share_200"] == pytest.approx(4.0 / 400)
    assert geometry_cost(tmp_path / "fullft_seed0", 10)["share_at_every"] == pytest.approx(0.01)
