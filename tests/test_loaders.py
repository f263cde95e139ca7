"""Data loaders: micro, local files in DeepMath-103K's schema, hub failure, bad files.

    .venv/bin/python -m pytest -q tests/test_loaders.py
"""
import json
import time

import pandas as pd
import pytest

from geora.data.loaders import load_data
from geora.models import HubUnavailableError

DEEPMATH_ROWS = [{"question": f"What is {i}+{i}?", "final_answer": str(2 * i),
                  "difficulty": 3.0, "topic": "Arithmetic", "r1_solution_1": "long",
                  "r1_solution_2": "long", "r1_solution_3": "long"} for i in range(10)]


def deepmath_cfg(**kw):
    cfg = {"name": "deepmath_103k", "source": "hub", "hub_id": "zwhe99/DeepMath-103K",
           "local_path": None, "train_size": None, "test_size": 3, "seed": 0,
           "prompt_suffix": " Box it.", "system_prompt": None}
    cfg.update(kw)
    return cfg


def test_micro_split_prompt_and_answer():
    train, test = load_data({"name": "micro_math", "source": "micro", "task": "math",
                             "train_size": 6, "test_size": 3, "seed": 0, "prompt_suffix": ""})
    assert len(train) == 6 and len(test) == 3
    row = train[0]
    assert row["prompt"] == [{"role": "user", "content": row["question"]}]
    assert isinstance(row["final_answer"], str)
    assert not set(train["question"]) & set(test["question"])


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "dir"])
def test_local_files_in_deepmath_schema(tmp_path, fmt):
    frame = pd.DataFrame(DEEPMATH_ROWS)
    if fmt == "jsonl":
        path = tmp_path / "d.jsonl"
        frame.to_json(path, orient="records", lines=True)
    else:
        path = tmp_path / "data" if fmt == "dir" else tmp_path / "d.parquet"
        target = path / "train-00000.parquet" if fmt == "dir" else path
        target.parent.mkdir(exist_ok=True)
        frame.to_parquet(target)
    train, test = load_data(deepmath_cfg(local_path=str(path)))
    assert len(train) == 7 and len(test) == 3
    assert set(train["question"]) | set(test["question"]) == {r["question"] for r in DEEPMATH_ROWS}
    assert train[0]["prompt"][-1]["content"].endswith(" Box it.")
    assert "r1_solution_1" not in train.column_names
    # Seeded hold-out: same seed, same split; another seed, another split.
    assert load_data(deepmath_cfg(local_path=str(path)))[1]["question"] == test["question"]
    assert load_data(deepmath_cfg(local_path=str(path), seed=1))[1]["question"] != test["question"]


def test_missing_field_names_field_and_file(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(json.dumps({"question": "q", "answer": "1"}) for _ in range(4)))
    with pytest.raises(ValueError, match=r"bad\.jsonl lacks required field 'final_answer'"):
        load_data(deepmath_cfg(local_path=str(path)))


def test_missing_path_and_empty_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_data(deepmath_cfg(local_path=str(tmp_path / "nowhere")))
    with pytest.raises(FileNotFoundError, match="holds no"):
        load_data(deepmath_cfg(local_path=str(tmp_path)))


def test_unreachable_hub_fails_fast_naming_id_and_override(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    t0 = time.time()
    with pytest.raises(HubUnavailableError, match=r"zwhe99/DeepMath-103K.*data\.local_path"):
        load_data(deepmath_cfg())
    assert time.time() - t0 < 10
