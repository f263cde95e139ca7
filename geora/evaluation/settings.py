"""The evaluation settings (one conf/eval/*.yaml), checked before anything is loaded.

Schema (every key documented in conf/eval/micro.yaml):
    name, tasks, in_domain, backend (hf | vllm), batch_size, limit, data_dir,
    apply_chat_template, gen_kwargs, repeats, max_gen_toks, allow_code_execution,
    trust_remote_code, log_samples, seed, enable_thinking, think_end_token, num_threads
`repeats` is one k for every sampled task or a {task: k} mapping (tasks not named keep
their own k). The training code reads only `tasks` (empty: no evaluation).

>>> s = EvalSettings.from_config({"tasks": ["aime24", "math500"], "repeats": {"math500": 2}})
>>> s.repeats_for("math500"), s.repeats_for("aime24")
(2, None)
>>> EvalSettings.from_config({"tasks": ["mmlu"], "enable_thinking": True})
Traceback (most recent call last):
...
ValueError: eval.tasks has mmlu, scored by log-likelihood, which lm-eval refuses in thinking mode (eval.enable_thinking=True, from model.enable_thinking) (eval config 'custom'); evaluate it with thinking off or drop it from eval.tasks
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from geora.config.sections import EvalConfig
from geora.evaluation.catalog import task_info

BACKENDS = ("hf", "vllm")


def _int_at_least(key: str, v: Any, lo: int, where: str) -> int | None:
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                          or int(v) != v or int(v) < lo):
        raise ValueError(f"eval.{key}={v!r} {where}: expected an integer >= {lo} or null")
    return None if v is None else int(v)


def _repeats(v: Any, where: str) -> int | dict[str, int] | None:
    """One k, or {task: k} for sampled catalogue tasks."""
    if not isinstance(v, Mapping):
        return _int_at_least("repeats", v, 1, where)
    out = {}
    for task, k in v.items():
        info = task_info(str(task))
        if not info.sampled:
            raise ValueError(f"eval.repeats.{task}={k!r} {where}: {task} takes one sample per "
                             f"item (sampled tasks: aime24, aime25, math500, olymmath, humaneval, "
                             f"mbpp)")
        out[str(task)] = _int_at_least(f"repeats.{task}", k, 1, where)
    return out


def _chat_template(value, where: str) -> bool:
    """eval.apply_chat_template: true/false, or the model's prompt format ("chat" / "plain",
    what conf/eval/*.yaml interpolate from model.prompt_format)."""
    if value in (True, "chat"):
        return True
    if value in (False, "plain"):
        return False
    raise ValueError(f"eval.apply_chat_template={value!r} {where}: expected true, false, "
                     f"'chat' or 'plain'")


@dataclass(frozen=True)
class EvalSettings:
    """The checked eval section. Its defaults are the schema's (geora.config.sections
    .EvalConfig, which every conf/eval/*.yaml starts from): one place for each."""
    name: str = "custom"
    tasks: tuple[str, ...] = ()
    in_domain: tuple[str, ...] = ()
    backend: str = EvalConfig.backend
    batch_size: int = EvalConfig.batch_size
    limit: int | None = EvalConfig.limit
    data_dir: str | None = EvalConfig.data_dir
    apply_chat_template: bool = True      # the schema's follows model.prompt_format
    gen_kwargs: dict[str, Any] = field(default_factory=dict)
    # one k, or {task: k}; None: each task's own
    repeats: int | dict[str, int] | None = EvalConfig.repeats
    max_gen_toks: int | None = EvalConfig.max_gen_toks
    allow_code_execution: bool = EvalConfig.allow_code_execution
    trust_remote_code: bool = EvalConfig.trust_remote_code
    log_samples: bool = EvalConfig.log_samples
    seed: int = EvalConfig.seed
    enable_thinking: bool | None = None   # Qwen3 chat templates; None = the template's default
    # e.g. "</think>": score only what follows it
    think_end_token: str | None = EvalConfig.think_end_token
    num_threads: int | None = EvalConfig.num_threads   # torch CPU threads; None = as is

    def repeats_for(self, task: str) -> int | None:
        """The k of a sampled task: eval.repeats (for all, or this task's entry) or None
        (the task's own)."""
        if isinstance(self.repeats, dict):
            return self.repeats.get(task)
        return self.repeats

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | "EvalSettings") -> "EvalSettings":
        """Validate a DictConfig / dict (an `eval` config group) into settings."""
        if isinstance(cfg, EvalSettings):
            return cfg
        raw = dict(cfg.items()) if hasattr(cfg, "items") else dict(cfg)
        # eval.overwrite (conf/evaluate.yaml) tells scripts/evaluate.py whether it may replace
        # an evaluation of other settings; it changes nothing that is scored
        raw.pop("overwrite", None)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown eval config key(s) {unknown}; known: {sorted(known)}")
        name = str(raw.get("name", cls.name))
        where = f"(eval config {name!r})"
        tasks = tuple(str(t) for t in (raw.get("tasks") or ()))
        for t in tasks:
            task_info(t)  # raises, naming the valid tasks
        # in_domain may name more than `tasks` (eval.tasks=[...] narrows a config).
        in_domain = tuple(str(t) for t in (raw.get("in_domain") or ()))
        for t in in_domain:
            task_info(t)
        backend = str(raw.get("backend", cls.backend))
        if backend not in BACKENDS:
            raise ValueError(f"eval.backend={backend!r} {where}; choose one of {BACKENDS}")
        ints = {key: _int_at_least(key, raw.get(key, getattr(cls, key, None)), 1, where)
                for key in ("batch_size", "limit", "max_gen_toks", "num_threads")}
        repeats = _repeats(raw.get("repeats"), where)
        thinking = raw.get("enable_thinking")
        if thinking is not None and not isinstance(thinking, bool):
            raise ValueError(f"eval.enable_thinking={thinking!r} {where}: expected true, false "
                             f"or null")
        if thinking:
            scored = [t for t in tasks if task_info(t).loglikelihood]
            if scored:
                raise ValueError(
                    f"eval.tasks has {', '.join(scored)}, scored by log-likelihood, which lm-eval "
                    f"refuses in thinking mode (eval.enable_thinking=True, from "
                    f"model.enable_thinking) {where}; evaluate it with thinking off or drop it "
                    f"from eval.tasks")
        data_dir = raw.get("data_dir")
        if data_dir is not None:
            data_dir = str(Path(str(data_dir)).expanduser().resolve())
            if not Path(data_dir).is_dir():
                raise FileNotFoundError(f"eval.data_dir={data_dir!r} {where} is not a directory")
        gen_kwargs = dict(raw.get("gen_kwargs") or {})
        return cls(name=name, tasks=tasks, in_domain=in_domain, backend=backend,
                   batch_size=ints["batch_size"] or 1, limit=ints["limit"], data_dir=data_dir,
                   apply_chat_template=_chat_template(
                       raw.get("apply_chat_template", cls.apply_chat_template), where),
                   gen_kwargs=gen_kwargs, repeats=repeats,
                   max_gen_toks=ints["max_gen_toks"],
                   allow_code_execution=bool(raw.get("allow_code_execution",
                                                     cls.allow_code_execution)),
                   trust_remote_code=bool(raw.get("trust_remote_code", cls.trust_remote_code)),
                   log_samples=bool(raw.get("log_samples", cls.log_samples)),
                   seed=int(raw.get("seed", cls.seed)),
                   enable_thinking=thinking,
                   think_end_token=raw.get("think_end_token", cls.think_end_token),
                   num_threads=ints["num_threads"])

    def as_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple)
                         else dict(v) if isinstance(v, dict) else v)
                for f in fields(self)}
