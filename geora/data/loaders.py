"""RLVR data sets in one schema: a chat `prompt` column, `final_answer` (the gold), and the
source's other fields (question, difficulty, topic, ...), as `datasets.Dataset`s.

The prompt is the question and `data.prompt_suffix` (null = the math instruction, "" =
nothing), built by geora.prompts.chat_prompt, the function the evaluation tasks use too.

Sources (`data.source`):
- "micro": the synthetic tasks of geora.data.micro (`data.task`, train/test sizes, seed);
- "hub":   a hub data set in DeepMath-103K's schema (`data.hub_id`); a local copy wins when
           `data.local_path` is set, and an unreachable hub stops at once with a message
           naming the id and `data.local_path` (geora.models.HubUnavailableError);
- "local": `data.local_path` only: a .jsonl / .json / .parquet file or a folder of them.

>>> train, test = load_data({"name": "m", "source": "micro", "task": "math",
...                          "train_size": 4, "test_size": 2, "prompt_suffix": ""})
>>> len(train), len(test), train[0]["prompt"] == [{"role": "user",
...                                                "content": train[0]["question"]}]
(4, 2, True)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from geora.prompts import chat_prompt

REQUIRED_FIELDS = ("question", "final_answer")
FILE_SUFFIXES = (".jsonl", ".json", ".parquet")


def _read_file(path: Path) -> list[dict]:
    import pandas as pd

    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
    elif path.suffix in (".jsonl", ".json"):
        try:
            frame = pd.read_json(path, lines=path.suffix == ".jsonl")
        except ValueError as e:
            raise ValueError(f"cannot read {path} as {path.suffix[1:]}: {e}") from None
    else:
        raise ValueError(f"data file {path}: unsupported suffix {path.suffix!r}; "
                         f"use one of {FILE_SUFFIXES}")
    missing = [f for f in REQUIRED_FIELDS if f not in frame.columns]
    if missing:
        raise ValueError(f"data file {path} lacks required field {missing[0]!r} "
                         f"(has {sorted(map(str, frame.columns))}; needs {list(REQUIRED_FIELDS)})")
    return frame.to_dict(orient="records")


def read_records(path: str | Path) -> list[dict]:
    """Every record of a file, or of every data file under a folder (sorted by path)."""
    path = Path(path).expanduser()
    if path.is_file():
        return _read_file(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in FILE_SUFFIXES and p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if not files:
            raise FileNotFoundError(f"data folder {path} holds no {'/'.join(FILE_SUFFIXES)} files")
        return [rec for f in files for rec in _read_file(f)]
    raise FileNotFoundError(f"data.local_path={str(path)!r} does not exist")


def _records_of(cfg: Mapping[str, Any]) -> list[dict]:
    source = cfg.get("source")
    if cfg.get("local_path"):
        return read_records(cfg["local_path"])
    if source == "local":
        raise ValueError(f"data {cfg.get('name')!r}: source 'local' needs data.local_path")
    if source == "hub":
        from geora.models import resolve_hub_snapshot

        snapshot = resolve_hub_snapshot(str(cfg["hub_id"]), repo_type="dataset",
                                        override_key="data.local_path",
                                        revision=cfg.get("revision"))
        return read_records(snapshot)
    raise ValueError(f"data {cfg.get('name')!r}: unknown source {source!r}; "
                     "choose micro, hub or local")


def _to_dataset(records: list[dict], cfg: Mapping[str, Any]):
    from datasets import Dataset

    suffix, system = cfg.get("prompt_suffix"), cfg.get("system_prompt")
    rows = []
    for rec in records:
        # Reference solutions (DeepMath's r1_solution_1..3, several KB each) are not needed
        # for RLVR and would only ride along in every batch: dropped.
        row = {k: v for k, v in rec.items() if k != "prompt" and not k.startswith("r1_solution")}
        row["final_answer"] = str(rec["final_answer"])
        row["prompt"] = chat_prompt(str(rec["question"]), suffix, system)
        rows.append(row)
    return Dataset.from_list(rows)


def load_data(cfg: Mapping[str, Any]):
    """(train, test) `datasets.Dataset`s for a `data` config (conf/data/*.yaml or a dict)."""
    seed = int(cfg.get("seed", 0))
    test_size = int(cfg.get("test_size") or 0)
    train_size = cfg.get("train_size")
    if cfg.get("source") == "micro" and not cfg.get("local_path"):
        from geora.data.micro import make_split

        task = str(cfg.get("task", "math"))
        if train_size is None:
            raise ValueError(f"data {cfg.get('name')!r}: micro data needs data.train_size")
        train = make_split(task, "train", int(train_size), seed=seed)
        test = make_split(task, "test", test_size, seed=seed)
    else:
        import random

        records = _records_of(cfg)
        # A single-split source (DeepMath-103K): hold out `test_size` records, seeded.
        order = list(range(len(records)))
        random.Random(seed).shuffle(order)
        if test_size >= len(records):
            raise ValueError(f"data {cfg.get('name')!r}: test_size={test_size} leaves no "
                             f"training records out of {len(records)}")
        test = [records[i] for i in order[:test_size]]
        train = [records[i] for i in order[test_size:]]
        if train_size is not None:
            train = train[:int(train_size)]
    return _to_dataset(train, cfg), _to_dataset(test, cfg)
