"""The evaluation tasks this project knows, by the names conf/eval/*.yaml use.

Each entry maps a paper benchmark (or a micro task) to the lm-eval task that scores it, the
metric that is its headline number, and where its data comes from: the hub data set that
lm-eval loads by default, or the file under `eval.data_dir` (same columns) that replaces it.

Built-ins of lm-eval are used where they fit (mmlu, ifeval, medqa_4options); tasks of our
own (geora/evaluation/tasks/) where they do not: OlymMATH has none; the AIME/MATH500
built-ins are greedy with a string-matching checker, the paper reports avg@k; the
HumanEval/MBPP built-ins need a hub-fetched metric.

Headline metrics and sample counts follow what the paper's printed scores admit
(scripts/paper_granularity.py): AIME avg@8, MATH500 one sample, OlymMATH avg@4, HumanEval
and MBPP pass@1, MMLU accuracy, MedQA accuracy (one greedy answer, as trained). IFEval's scores fit none of its four readings, so
all four are recorded (`extra_metrics`) and prompt-level strict is the headline.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
AVG = "avg_at_k,all_samples"  # headline key of our generative tasks: metric,filter
PASS = ("pass_at_k,all_samples",)  # ... and the share of items with at least one success
# A MedQA record: the question and its options (the training data's required columns).
MEDQA_COLUMNS = ("sent1", "ending0", "ending1", "ending2", "ending3", "label")
IFEVAL_READINGS = ("prompt_level_loose_acc,none", "inst_level_strict_acc,none",
                   "inst_level_loose_acc,none")


@dataclass(frozen=True)
class TaskInfo:
    name: str                      # catalogue name, used in conf/eval/*.yaml and results
    label: str                     # column name in the paper's tables
    lm_task: str                   # lm-eval task or group it runs
    metric: str                    # headline "metric,filter" key in lm-eval's results
    hub_id: str | None = None      # data set lm-eval loads by default (None: generated)
    hub_config: str | None = None
    # lm-eval split name -> file name under eval.data_dir, in the hub data set's columns.
    local_files: dict[str, str] = field(default_factory=dict)
    sampled: bool = False          # avg@k task whose k follows eval.repeats
    runs_code: bool = False        # needs eval.allow_code_execution=true
    # For a group (MMLU): the column that names each subtask, and the subtask name pattern.
    subtask_column: str | None = None
    subtask_pattern: str | None = None
    # Other "metric,filter" keys of the same lm-eval results to record beside the headline.
    extra_metrics: tuple[str, ...] = ()
    # Scored by log-likelihoods of the options, not by a generated answer: lm-eval refuses
    # such tasks in thinking mode.
    loglikelihood: bool = False
    # Columns every record of a local file (eval.data_dir) must have, checked before any
    # model is loaded (a MedQA file without its options is named, not scored as zeros).
    required_columns: tuple[str, ...] = ()


def _math(name, label, hub_id, split, config=None):
    return TaskInfo(name, label, f"geora_{name}", AVG, hub_id, config,
                    {split: f"{name}.jsonl"}, sampled=True, extra_metrics=PASS)


CATALOG: dict[str, TaskInfo] = {t.name: t for t in (
    _math("aime24", "AIME24", "Maxwell-Jia/AIME_2024", "train"),
    _math("aime25", "AIME25", "math-ai/aime25", "test"),
    _math("math500", "MATH500", "HuggingFaceH4/MATH-500", "test"),
    _math("olymmath", "OlymMATH", "RUC-AIBOX/OlymMATH", "test", "en-hard"),
    TaskInfo("humaneval", "HumanEval", "geora_humaneval", AVG, "openai/openai_humaneval",
             None, {"test": "humaneval.jsonl"}, sampled=True, runs_code=True, extra_metrics=PASS),
    TaskInfo("mbpp", "MBPP", "geora_mbpp", AVG, "google-research-datasets/mbpp", "full",
             {"test": "mbpp.jsonl"}, sampled=True, runs_code=True, extra_metrics=PASS),
    TaskInfo("mmlu", "MMLU", "mmlu", "acc,none", "cais/mmlu", None,
             {"test": "mmlu.jsonl"}, subtask_column="subject", subtask_pattern="mmlu_{}",
             loglikelihood=True),
    TaskInfo("ifeval", "IFEval", "ifeval", "prompt_level_strict_acc,none", "google/IFEval",
             None, {"train": "ifeval.jsonl"}, extra_metrics=IFEVAL_READINGS),
    # MedQA as trained: the training prompt, one greedy answer, the `choice` parser
    # (tasks/geora_medqa.yaml); the domains table's number. Its log-likelihood reading
    # (lm-eval's medqa_4options: "Question: ... Answer:" and the letters' likelihoods) is an
    # extra score on the same 1,273 questions.
    TaskInfo("medqa", "MedQA", "geora_medqa", AVG, "GBaker/MedQA-USMLE-4-options-hf", None,
             {"test": "medqa.jsonl"}, required_columns=MEDQA_COLUMNS),
    TaskInfo("medqa_loglik", "MedQA (log-lik.)", "medqa_4options", "acc,none",
             "GBaker/MedQA-USMLE-4-options-hf", None, {"test": "medqa.jsonl"},
             extra_metrics=("acc_norm,none",), loglikelihood=True,
             required_columns=MEDQA_COLUMNS),
    TaskInfo("micro_math", "micro math", "geora_micro_math", AVG),
    TaskInfo("micro_reverse", "micro reverse", "geora_micro_reverse", AVG),
    TaskInfo("micro_sort", "micro sort", "geora_micro_sort", AVG),
    # the same tasks on 1,000 test items each (eval=micro_large: the powered micro study)
    TaskInfo("micro_math_1k", "micro math (1k)", "geora_micro_math_1k", AVG),
    TaskInfo("micro_reverse_1k", "micro reverse (1k)", "geora_micro_reverse_1k", AVG),
    TaskInfo("micro_sort_1k", "micro sort (1k)", "geora_micro_sort_1k", AVG),
)}


def task_info(name: str) -> TaskInfo:
    if name not in CATALOG:
        raise ValueError(f"unknown evaluation task {name!r} (in eval.tasks); "
                         f"choose from {sorted(CATALOG)}")
    return CATALOG[name]
