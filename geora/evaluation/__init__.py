"""Evaluation through lm-evaluation-harness: the paper's benchmarks, the micro tasks, any run.

    from geora.evaluation import evaluate_in_memory
    scores = evaluate_in_memory(model, tokenizer, cfg.eval, out_dir)   # {task: percent}

Task definitions (our own YAMLs, one include path) live in geora/evaluation/tasks/; the
names conf/eval/*.yaml use are in catalog.py. Command line: scripts/evaluate.py.
"""
from geora.evaluation.catalog import CATALOG, TASKS_DIR, TaskInfo, task_info
from geora.evaluation.execution import CodeExecutionRefused
from geora.evaluation.harness import (evaluate_in_memory, evaluate_pretrained, format_scores,
                                      run_lm, scores_from_results, write_results)
from geora.evaluation.settings import EvalSettings
from geora.evaluation.specs import DatasetUnavailableError, build_specs

__all__ = ["CATALOG", "TASKS_DIR", "TaskInfo", "task_info", "CodeExecutionRefused",
           "evaluate_in_memory", "evaluate_pretrained", "format_scores", "run_lm",
           "scores_from_results", "write_results", "EvalSettings", "DatasetUnavailableError",
           "build_specs"]
