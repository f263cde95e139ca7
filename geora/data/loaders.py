"""RLVR data sets in one schema: a chat `prompt` column, the gold its reward reads
(`final_answer`, or `tests` / `test_format` for code) and the source's own columns, as
`datasets.Dataset`s.

Raw records become training rows through the data set's schema (`data.schema`, default
"deepmath"; geora.data.schemas), whose prompt text (the question, options or signature, then
`data.prompt_suffix`: null = the schema's instruction, "" = nothing) geora.prompts.chat_prompt
turns into the user turn, the function the evaluation tasks use too.

Sources (`data.source`):
- "micro": the synthetic tasks of geora.data.micro (`data.task`, train/test sizes, seed);
- "hub":   a hub data set (`data.hub_id`); a local copy wins when `data.local_path` is set,
           and an unreachable hub stops at once with a message naming the id and
           `data.local_path` (geora.models.HubUnavailableError);
- "local": `data.local_path` only: a .jsonl / .json / .parquet file or a folder of them.
In a folder, `data.files` (glob patterns relative to it; null = every data file) selects
what is read, e.g. MedQA's train.json and never its dev/test files.

>>> train, test = load_data({"name": "m", "source": "micro", "task": "math",
...                          "train_size": 4, "test_size": 2, "prompt_suffix": ""})
>>> len(train), len(test), train[0]["prompt"] == [{"role": "user",
...                                                "content": train[0]["question"]}]
(4, 2, True)
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping

from geora.config.sections import DataConfig
from geora.data.schemas import get_schema, to_rlvr_rows
from geora.prompts import prompt_for

DEFAULT_SCHEMA = DataConfig.schema   # (one default: the schema's)
FILE_SUFFIXES = (".jsonl", ".json", ".parquet")


def _json_records(path: Path) -> list[dict]:
    """A .jsonl file, or a .json file holding a list of records or (as many hub data sets
    ship it) one record per line."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:   # binary or another encoding: name the file
        raise ValueError(f"cannot read {path}: not UTF-8 text (byte {e.start}: "
                         f"{e.reason}); a data file is JSON lines, JSON or parquet") from None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None  # not one JSON document: read it as JSON lines
        if isinstance(data, list):
            return data
        if isinstance(data, dict):   # one record (a JSON-lines file of one line)
            return [data]
        if data is not None:
            raise ValueError(f"cannot read {path}: a .json data file must hold a list of "
                             f"records or one record per line")
    records = []
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"cannot read {path}:{i} as JSON: {e.msg}") from None
    return records


def _read_file(path: Path, required: Iterable[str] = ()) -> list[dict]:
    """The records of one data file as plain Python values (no dtype guessing: a final
    answer "007" stays a string), each checked for the `required` columns."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            records = pq.read_table(path).to_pylist()
        except Exception as e:   # pyarrow's errors name no file
            raise ValueError(f"cannot read {path} as parquet: {type(e).__name__}: "
                             f"{str(e)[:200]}") from None
    elif path.suffix in (".jsonl", ".json"):
        records = _json_records(path)
    else:
        raise ValueError(f"data file {path}: unsupported suffix {path.suffix!r}; "
                         f"use one of {FILE_SUFFIXES}")
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise ValueError(f"data file {path}, record {i}: expected a JSON object, got "
                             f"{type(rec).__name__}")
        missing = [f for f in required if f not in rec]
        if missing:
            raise ValueError(f"data file {path} lacks required field {missing[0]!r} (record {i} "
                             f"has {sorted(map(str, rec))}; needs {list(required)})")
    return records


def data_files(folder: Path, patterns: Iterable[str] | None = None) -> list[Path]:
    """The data files under `folder` (sorted; hidden ones skipped), or those matching
    `patterns` (glob, relative to it), each pattern required to match."""
    def visible(p: Path) -> bool:
        return (p.is_file() and p.suffix in FILE_SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(folder).parts))

    if patterns is None:
        files = sorted(p for p in folder.rglob("*") if visible(p))
        if not files:
            raise FileNotFoundError(f"data folder {folder} holds no {'/'.join(FILE_SUFFIXES)} files")
        return files
    files = set()
    for pattern in patterns:
        matched = [p for p in folder.glob(str(pattern)) if visible(p)]
        if not matched:
            raise FileNotFoundError(f"data.files pattern {str(pattern)!r} matches no data file "
                                    f"under {folder}")
        files.update(matched)
    return sorted(files)


def read_records(path: str | Path, required: Iterable[str] = (),
                 files: Iterable[str] | None = None) -> list[dict]:
    """Every record of a file, or of the data files under a folder (see `data_files`)."""
    path = Path(path).expanduser()
    if path.is_file():
        return _read_file(path, required)
    if path.is_dir():
        return [rec for f in data_files(path, files) for rec in _read_file(f, required)]
    raise FileNotFoundError(f"data.local_path={str(path)!r} does not exist")


def _records_of(cfg: DataConfig, required: tuple[str, ...]) -> list[dict]:
    """A local file or folder (data.local_path), else the hub snapshot (source hub; the
    config's checks refuse source local without a path)."""
    files = None if cfg.files is None else list(cfg.files)
    if cfg.local_path:
        return read_records(cfg.local_path, required, files)
    from geora.models import resolve_hub_snapshot

    if not cfg.hub_id:
        raise ValueError(f"data {cfg.name!r}: source hub needs data.hub_id (or data.local_path)")
    snapshot = resolve_hub_snapshot(cfg.hub_id, repo_type="dataset",
                                    override_key="data.local_path", revision=cfg.revision)
    return read_records(snapshot, required, files)


def _to_dataset(records: list[dict], cfg: DataConfig, schema: str,
                prompt_format: str = "chat"):
    """Training rows: the schema's conversion, then the prompt (chat turns, or the plain
    user text for prompt_format="plain")."""
    from datasets import Dataset

    # Reference solutions (DeepMath's r1_solution_1..3, several KB each) are not needed
    # for RLVR and would only ride along in every batch: dropped, as is a raw "prompt".
    kept = [{k: v for k, v in rec.items() if k != "prompt" and not k.startswith("r1_solution")}
            for rec in records]
    rows = to_rlvr_rows(schema, kept, suffix=cfg.prompt_suffix, where=f"data {cfg.name!r}")
    for row in rows:
        row["prompt"] = prompt_for(row.pop("prompt_text"), "", cfg.system_prompt,
                                   prompt_format)
    return Dataset.from_list(rows)


def load_data(cfg: DataConfig | Mapping[str, Any], prompt_format: str = "chat"):
    """(train, test) `datasets.Dataset`s for a `data` config (a DataConfig, or a DictConfig
    / dict checked into one); prompt_format: the model's (model.prompt_format), chat turns
    or plain text."""
    cfg = DataConfig.of(cfg)
    schema = cfg.schema or DEFAULT_SCHEMA
    required = get_schema(schema).required     # an unknown schema fails before any reading
    seed, test_size, train_size = cfg.seed, cfg.test_size or 0, cfg.train_size
    if cfg.source == "micro" and not cfg.local_path:
        from geora.data.micro import make_split

        train = make_split(cfg.task, "train", train_size, seed=seed)
        test = make_split(cfg.task, "test", test_size, seed=seed)
    else:
        import random

        records = _records_of(cfg, required)
        # A single-split source (DeepMath-103K): hold out `test_size` records, seeded.
        order = list(range(len(records)))
        random.Random(seed).shuffle(order)
        if test_size >= len(records):
            raise ValueError(f"data {cfg.name!r}: test_size={test_size} leaves no "
                             f"training records out of {len(records)}")
        test = [records[i] for i in order[:test_size]]
        train = [records[i] for i in order[test_size:]]
        if train_size is not None:
            train = train[:int(train_size)]
    return (_to_dataset(train, cfg, schema, prompt_format),
            _to_dataset(test, cfg, schema, prompt_format))
