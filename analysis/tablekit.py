"""The parts every table is built from: cells, their text, and the method-by-column engine.

A `Table` is a list of cells in long form (one dict per cell: block, section, row, source,
column, text and the numbers behind it); analysis.render turns it into Markdown, LaTeX and
CSV. `method_rows` fills one section of a table: a line per method and settings variant,
with, where asked, the paper's line above it, the chance line and the paired difference to
a reference method below it.

Text of a cell (analysis.stats computes the numbers):
- ours: mean ± half-width of the 95% Student-t interval over seeds, and n: "23.10 ± 1.20 (n=3)";
  n = 1 has no interval: "23.10 (n=1)"; no run with a value: "missing".
- Δ (paired difference, method − reference, over the seeds both ran): "-1.05 [-2.10, -0.20] (n=3)"
  with the percentile bootstrap interval; "*" marks a difference whose bootstrap interval
  AND paired-t interval both exclude 0 (with 3-5 seeds the bootstrap alone under-covers).
- ratio (method / reference, independent runs): "0.801 [0.785, 0.818] (n=3/3)", the interval
  from the delta method on the log scale with Welch's degrees of freedom (`ratio_interval`).

>>> interval_text(mean_interval([57.5, 59.0, 58.0]), 2)
'58.17 ± 1.90 (n=3)'
>>> interval_text(mean_interval([]), 2)
'missing'
>>> ratio_interval([2.0, 2.0], [4.0, 4.0])
Ratio(ratio=0.5, low=0.5, high=0.5, n=2, n_reference=2)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from analysis.runs import BASE_METHOD, failed, finished, shared_settings, variants
from analysis.stats import CONFIDENCE, Interval, mean_interval, paired_table, t_quantile

MISSING = "missing"
NOT_REPORTED = "—"
CSV_COLUMNS = ("table", "block", "section", "row", "method", "variant", "source", "column",
               "text", "value", "low", "high", "n", "n_reference", "t_low", "t_high")


@dataclass
class Table:
    """One table: its cells in long form, a legend (printed with it) and notes (what was
    split, failed, left out; printed below it, LaTeX comments)."""
    name: str
    title: str
    legend: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cells: list[dict] = field(default_factory=list)

    def add(self, block: str, section: str, row: str, source: str, column: str, text: str,
            **numbers) -> None:
        self.cells.append({"table": self.name, "block": block, "section": section, "row": row,
                           "source": source, "column": column, "text": text, **numbers})

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def explain(self, text: str) -> None:
        if text not in self.legend:
            self.legend.append(text)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.cells, columns=list(CSV_COLUMNS))


# ------------------------------------------------------------------------------ numbers
def numbers(values) -> np.ndarray:
    arr = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").to_numpy(float)
    return arr[np.isfinite(arr)]


def interval_text(iv: Interval, digits: int = 2, fmt: Callable[[float], str] | None = None) -> str:
    """'58.17 ± 1.90 (n=3)', '58.17 (n=1)', 'missing'; `fmt` replaces the number format."""
    if iv.n == 0 or iv.mean is None:
        return MISSING
    show = fmt or (lambda x: f"{x:.{digits}f}")
    if iv.low is None or fmt is not None:
        return f"{show(iv.mean)} (n={iv.n})"
    return f"{show(iv.mean)} ± {iv.half_width:.{digits}f} (n={iv.n})"


def count_text(x: float) -> str:
    """A parameter count as the paper writes it: 0.04B, 43.6M, 12.3K."""
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.0f}"


@dataclass(frozen=True)
class Ratio:
    ratio: float | None
    low: float | None
    high: float | None
    n: int
    n_reference: int


def ratio_interval(values, reference, confidence: float = CONFIDENCE) -> Ratio:
    """mean(values) / mean(reference) of two independent samples of positive numbers, with
    the interval exp(log r ± t · se), se² = sd_a²/(n_a m_a²) + sd_b²/(n_b m_b²) (the delta
    method for the log of each mean) and t at Welch-Satterthwaite degrees of freedom.
    No interval unless both sides have n >= 2 and positive means."""
    a, b = numbers(values), numbers(reference)
    if len(a) == 0 or len(b) == 0 or b.mean() == 0:
        return Ratio(None, None, None, len(a), len(b))
    r = float(a.mean() / b.mean())
    if len(a) < 2 or len(b) < 2 or a.mean() <= 0 or b.mean() <= 0:
        return Ratio(r, None, None, len(a), len(b))
    va = a.var(ddof=1) / (len(a) * a.mean() ** 2)
    vb = b.var(ddof=1) / (len(b) * b.mean() ** 2)
    if va + vb == 0:
        return Ratio(r, r, r, len(a), len(b))
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = t_quantile(confidence, df) * math.sqrt(va + vb)
    return Ratio(r, r * math.exp(-half), r * math.exp(half), len(a), len(b))


def ratio_text(q: Ratio, digits: int = 3) -> str:
    if q.ratio is None:
        return MISSING
    if q.low is None:
        return f"{q.ratio:.{digits}f} (n={q.n}/{q.n_reference})"
    return f"{q.ratio:.{digits}f} [{q.low:.{digits}f}, {q.high:.{digits}f}] (n={q.n}/{q.n_reference})"


def difference_cell(row: pd.Series, digits: int) -> tuple[str, dict]:
    """Text and numbers of one analysis.stats.paired_table row ("*": resolved, see above)."""
    nums = {k: (None if pd.isna(row[k]) else float(row[k]))
            for k in ("low", "high", "t_low", "t_high")}
    nums.update(value=None if pd.isna(row["diff"]) else float(row["diff"]), n=int(row["n"]))
    text = row["text"]
    if nums["low"] is not None and nums["t_low"] is not None and (
            (nums["low"] > 0 and nums["t_low"] > 0) or (nums["high"] < 0 and nums["t_high"] < 0)):
        text += " *"
    return text, nums


# -------------------------------------------------------------------------- the engine
@dataclass(frozen=True)
class Column:
    """One column: `metric` is a column of the runs frame. `where` = (column, value) keeps the
    runs with that value (e.g. one learning rate); `chance` a column of chance levels (a
    chance line); `ratio_to` a reference method (the cell is a ratio to its runs); `paper`
    the benchmark's label in paper_results.csv; `fmt` a number format without interval."""
    label: str
    metric: str
    paper: str | None = None
    digits: int = 2
    where: tuple | None = None
    chance: str | None = None
    ratio_to: str | None = None
    fmt: Callable[[float], str] | None = None


@dataclass
class Group:
    """Columns read from the same runs (e.g. one domain's runs: medical RLVR for MedQA)."""
    runs: pd.DataFrame
    columns: list[Column]


def _where(runs: pd.DataFrame, col: Column) -> pd.DataFrame:
    """The runs a column reads: those with col.where's value (all when it has none)."""
    if col.where is None or runs.empty:
        return runs
    key, value = col.where
    return runs[pd.to_numeric(runs[key], errors="coerce") == value] if key in runs else runs.iloc[:0]


def _values(runs: pd.DataFrame, col: Column, metric: str | None = None) -> np.ndarray:
    runs, metric = _where(runs, col), metric or col.metric
    return numbers(runs[metric]) if metric in runs else np.array([])


def _relevant(runs: pd.DataFrame, columns: Sequence[Column]) -> pd.DataFrame:
    """Finished runs with a value in at least one of `columns`."""
    done = finished(runs)
    if done.empty:
        return done
    metrics = [c.metric for c in columns if c.metric in done]
    if not metrics:
        return done.iloc[:0]
    return done[done[metrics].apply(pd.to_numeric, errors="coerce").notna().any(axis=1)]


def _dedupe(table: Table, runs: pd.DataFrame, label: str) -> pd.DataFrame:
    """One run per (settings, seed): the same run found twice (e.g. under two roots) counts once."""
    if runs.empty or "seed" not in runs or runs["seed"].isna().all():
        return runs
    dup = runs.duplicated(subset=[c for c in ("settings_id", "seed") if c in runs], keep="first")
    for _, r in runs[dup].iterrows():
        table.note(f"{label}: seed {r['seed']} found twice; kept the first, left out {r.get('run_dir')}")
    return runs[~dup]


def _pick(parts: list[tuple[str, pd.DataFrame]], runs: pd.DataFrame):
    """The reference method's variant for `runs`: the one sharing their other settings
    (the most runs wins a tie). None when there is none."""
    key = shared_settings(runs)
    match = [(label, part) for label, part in parts if shared_settings(part) == key]
    return max(match, key=lambda lp: len(lp[1])) if match else None


def method_rows(table: Table, *, block: str, section: str, groups: Sequence[Group],
                methods: Sequence[str], labels: dict, paper: dict | None = None,
                reference: str | None = None, variant_ignore: Sequence[str] = (),
                variant_extra: Sequence[str] = (), extras: bool = True) -> None:
    """Fill `section` of `table`: for each method (`methods` first, then, with `extras`, any
    other found in `groups`) the paper's line (where `paper` = {(method, paper label): text}
    has one), then per settings variant (analysis.runs.variants, less `variant_ignore`, plus
    the `variant_extra` columns) the lines ours, chance (where a column has one) and Δ vs
    `reference`. Methods left out (extras=False) and failed runs are named in the notes."""
    found = {m for g in groups if "method" in g.runs for m in g.runs["method"].dropna()}
    others = sorted(found - set(methods), key=str)
    order = list(methods) + (others if extras else [])
    if others and not extras:
        table.note(f"{block}: runs of other methods not in this table: {', '.join(map(str, others))}")
    columns = [c for g in groups for c in g.columns]
    rows: dict[tuple[str, str], dict] = {}      # (method, variant) -> {column: {line: (text, numbers)}}
    for group in groups:
        runs = group.runs
        by_method = {m: runs[runs["method"] == m] if "method" in runs else runs.iloc[:0] for m in order}
        parts = {m: [(lab, _dedupe(table, p, f"{labels.get(m, m)} {lab}".strip()))
                     for lab, p in variants(_relevant(sel, group.columns), variant_ignore, variant_extra)]
                 for m, sel in by_method.items()}
        for m in order:
            for _, r in failed(by_method[m]).iterrows():
                table.note(f"failed run ({labels.get(m, m)}, seed {r.get('seed')}): {r.get('run_dir')}"
                           f" - {r.get('error_type', '')}: {str(r.get('error', ''))[:120]}")
            if len(parts[m]) > 1:
                table.note(f"{block}: {labels.get(m, m)} runs differ in settings, shown apart: "
                           + "; ".join(f"[{lab}] n={len(p)}" for lab, p in parts[m]))
            for lab, part in parts[m] or [("", runs.iloc[:0])]:      # no runs: a "missing" line
                cells = rows.setdefault((m, lab), {})
                for col in group.columns:
                    cells[col.label] = _mark_limited(table, col, _where(part, col),
                                                     _cells(col, m, part, parts, reference))
    lines = {"ours": "ours", "chance": "chance", "delta": f"Δ vs {labels.get(reference, reference)}"}
    for m in order:
        name = labels.get(m, m)
        reported = {c.label: paper[(m, c.paper)] for c in columns if (m, c.paper) in (paper or {})}
        for c in columns if reported else ():
            text = reported.get(c.label, NOT_REPORTED)
            table.add(block, section, name, "paper", c.label, text, method=m, variant="", value=_float(text))
        for lab, cells in [(lab, cells) for (method, lab), cells in rows.items() if method == m]:
            for line, source in lines.items():
                texts = {c.label: cells.get(c.label, {}).get(line) for c in columns}
                if not any(texts.values()):
                    continue
                for c in columns:               # a column this variant's runs do not cover
                    text, nums = texts[c.label] or ("see other rows" if line == "ours" else "", {})
                    table.add(block, section, f"{name} [{lab}]" if lab else name, source, c.label, text,
                              method=m, variant=lab, **nums)


LIMITED_NOTE = ("[limit N]: scored on the first N items of each task (eval.limit), not the "
                "whole benchmark")


def _mark_limited(table: Table, col: Column, part: pd.DataFrame, cells: dict) -> dict:
    """Mark the `ours` text of a column read from limited evaluations ("[limit N]",
    analysis.runs' `limits` column), with a note saying what it means."""
    if "limits" not in part or "ours" not in cells:
        return cells
    limits = sorted({lim[col.metric] for lim in part["limits"]
                     if isinstance(lim, dict) and lim.get(col.metric) is not None})
    if not limits:
        return cells
    text, nums = cells["ours"]
    table.note(LIMITED_NOTE)
    return {**cells, "ours": (f"{text} [limit {', '.join(map(str, limits))}]", nums)}


def _float(text) -> float | None:
    try:
        return float(str(text).lstrip("≤<>~ ").rstrip(" †"))   # † marks an unknown definition
    except (TypeError, ValueError):
        return None


def _cells(col: Column, method: str, part: pd.DataFrame, parts: dict, reference: str | None) -> dict:
    """{line: (text, numbers)} of one method variant in one column; lines: ours, chance, delta.
    `parts`: {method: [(variant label, runs)]} of the same runs, for the reference methods."""
    values = _values(part, col)
    if col.ratio_to is not None:
        return {"ours": _ratio_cell(col, method, part, values, parts.get(col.ratio_to, []))}
    iv = mean_interval(values)
    out = {"ours": (interval_text(iv, col.digits, col.fmt),
                    {"value": iv.mean, "low": iv.low, "high": iv.high, "n": iv.n})}
    chance = _values(part, col, col.chance) if col.chance else []
    if len(chance):
        out["chance"] = (f"{chance.mean():.{col.digits}f}", {"value": float(chance.mean()), "n": len(chance)})
    if reference and method not in (reference, BASE_METHOD) and not part.empty:
        out["delta"] = _delta_cell(col, method, part, values, reference, parts.get(reference, []))
    return out


def _ratio_cell(col: Column, method: str, part: pd.DataFrame, values, references) -> tuple[str, dict]:
    if method == col.ratio_to:
        return ("1 (reference)" if len(values) else MISSING), {"value": 1.0, "n": len(values)}
    ref = _pick(references, part) if len(values) else None
    if ref is None:
        return (MISSING if not len(values) else f"no {col.ratio_to} run with these settings"), {"n": len(values)}
    q = ratio_interval(values, _values(ref[1], col))
    return ratio_text(q, col.digits), {"value": q.ratio, "low": q.low, "high": q.high, "n": q.n,
                                       "n_reference": q.n_reference}


def _delta_cell(col: Column, method: str, part: pd.DataFrame, values, reference: str,
                references) -> tuple[str, dict]:
    """analysis.stats.paired_table of this variant against the matching reference variant."""
    if not len(values):
        return NOT_REPORTED, {}
    ref = _pick(references, part)
    if ref is None:
        return f"n/a (no {reference} run with these settings)", {}
    both = _where(pd.concat([part.assign(_row=method), ref[1].assign(_row=reference)]), col)
    both = both.assign(**{col.metric: pd.to_numeric(both.get(col.metric), errors="coerce")})
    diff = paired_table(both, col.metric, reference=reference, method_col="_row", digits=col.digits)
    return difference_cell(diff.iloc[0], col.digits)
