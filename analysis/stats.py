"""Statistics over seeds: means with 95% intervals, paired differences, and their text.

    >>> iv = mean_interval([57.5, 59.0, 58.0])
    >>> format_interval(iv)
    '58.2 ± 1.9 (n=3)'
    >>> format_interval(mean_interval([58.3]))
    '58.3 (n=1, no interval)'
    >>> d = paired_difference({0: 60.0, 1: 61.0, 2: 59.0}, {0: 58.0, 1: 58.5, 2: 58.0})
    >>> format_difference(d)
    '+1.8 [+1.0, +2.5] (n=3)'

- `mean_interval`: mean and the Student-t interval mean ± t_{(1+c)/2, n-1} · sd / sqrt(n)
  (sd with n - 1); n = 1 has a mean but no interval, n = 0 has neither.
- `paired_difference`: the mean over the seeds both methods ran of (method - reference),
  with a seeded percentile bootstrap interval over those seeds (N_RESAMPLES resamples of
  the per-seed differences, with replacement) and, beside it, the paired-t interval. With
  n < 2 shared seeds there is no interval ("n/a"). With 3-4 seeds a bootstrap has few
  distinct resamples and under-covers (it is never wider than the observed differences):
  an interval that holds 0 says "not resolved", a narrow one is weak evidence; the
  t interval is the more cautious of the two.
- `seed_table`, `paired_table`: the same over a DataFrame of runs (one row per run, a
  `seed` column), for tables and figures.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as _scipy_stats

CONFIDENCE = 0.95
N_RESAMPLES = 10_000


def _clean(values: Iterable) -> np.ndarray:
    """Finite floats only: None, NaN and non-numbers (a failed run's missing score) dropped."""
    arr = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").to_numpy(float)
    return arr[np.isfinite(arr)]


def t_quantile(confidence: float, df: int) -> float:
    """Two-sided Student-t critical value t_{(1 + confidence) / 2, df} (scipy.stats.t)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence!r} must lie in (0, 1)")
    return float(_scipy_stats.t.ppf((1 + confidence) / 2, df))


@dataclass(frozen=True)
class Interval:
    """A mean over n seeds and its interval [low, high] (None where undefined)."""
    mean: float | None
    low: float | None
    high: float | None
    n: int
    sd: float | None = None

    @property
    def half_width(self) -> float | None:
        return None if self.low is None else (self.high - self.low) / 2


def mean_interval(values: Iterable, confidence: float = CONFIDENCE) -> Interval:
    """Mean and Student-t interval of the finite values (see the module docstring)."""
    x = _clean(values)
    n = len(x)
    if n == 0:
        return Interval(None, None, None, 0)
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, None, None, 1)
    sd = float(x.std(ddof=1))
    half = t_quantile(confidence, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, sd)


@dataclass(frozen=True)
class PairedDifference:
    """mean(method - reference) over the shared seeds, with bootstrap and t intervals."""
    diff: float | None
    low: float | None              # percentile bootstrap
    high: float | None
    n: int
    seeds: tuple = ()
    t_low: float | None = None     # paired Student t, for comparison
    t_high: float | None = None


def paired_difference(values: Mapping, reference: Mapping, *, confidence: float = CONFIDENCE,
                      n_resamples: int = N_RESAMPLES, seed: int = 0) -> PairedDifference:
    """values, reference: {seed: score}. Only seeds with a finite score in both count."""
    if n_resamples < 1:
        raise ValueError(f"n_resamples={n_resamples!r} must be >= 1")
    shared = []
    for s in sorted(set(values) & set(reference), key=str):
        a, b = _clean([values[s]]), _clean([reference[s]])
        if len(a) and len(b):
            shared.append((s, float(a[0] - b[0])))
    seeds = tuple(s for s, _ in shared)
    d = np.array([x for _, x in shared])
    if len(d) == 0:
        return PairedDifference(None, None, None, 0)
    if len(d) == 1:
        return PairedDifference(float(d[0]), None, None, 1, seeds)
    rng = np.random.default_rng(seed)
    boot = d[rng.integers(0, len(d), size=(n_resamples, len(d)))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    t = mean_interval(d, confidence)
    return PairedDifference(float(d.mean()), float(low), float(high), len(d), seeds, t.low, t.high)


def format_interval(iv: Interval, digits: int = 1) -> str:
    """'58.3 ± 2.1 (n=3)'; '58.3 (n=1, no interval)'; 'n/a (n=0)'."""
    if iv.mean is None:
        return "n/a (n=0)"
    if iv.low is None:
        return f"{iv.mean:.{digits}f} (n={iv.n}, no interval)"
    return f"{iv.mean:.{digits}f} ± {iv.half_width:.{digits}f} (n={iv.n})"


def format_difference(d: PairedDifference, digits: int = 1) -> str:
    """'+1.8 [+1.0, +2.5] (n=3)' (bootstrap interval); '+1.8 (n=1, n/a)'; 'n/a (n=0)'."""
    if d.diff is None:
        return "n/a (n=0)"
    if d.low is None:
        return f"{d.diff:+.{digits}f} (n={d.n}, n/a)"
    return f"{d.diff:+.{digits}f} [{d.low:+.{digits}f}, {d.high:+.{digits}f}] (n={d.n})"


def seed_table(runs: pd.DataFrame, metric: str, by: Sequence[str] = ("method",),
               confidence: float = CONFIDENCE, digits: int = 1) -> pd.DataFrame:
    """One row per group of `by`: mean, low, high, half_width, n and the text of `metric`."""
    if metric not in runs:
        raise KeyError(f"no column {metric!r} among the runs' columns")
    keys = [k for k in by if k in runs]
    rows = []
    for key, group in runs.groupby(keys, dropna=False, sort=True) if keys else [((), runs)]:
        iv = mean_interval(group[metric], confidence)
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(keys, key)), "mean": iv.mean, "low": iv.low, "high": iv.high,
                     "half_width": iv.half_width, "n": iv.n, "text": format_interval(iv, digits)})
    return pd.DataFrame(rows)


def paired_table(runs: pd.DataFrame, metric: str, reference: str = "geora",
                 by: Sequence[str] = (), method_col: str = "method", seed_col: str = "seed",
                 digits: int = 1, **kw) -> pd.DataFrame:
    """Each method's paired difference to `reference` on `metric` over shared seeds, within
    each group of `by` (e.g. model, data, lr). Columns: by..., method, diff, low, high,
    t_low, t_high, n, text."""
    for col in (metric, method_col, seed_col):
        if col not in runs:
            raise KeyError(f"no column {col!r} among the runs' columns")
    keys = [k for k in by if k in runs]
    rows = []
    for key, group in runs.groupby(keys, dropna=False, sort=True) if keys else [((), runs)]:
        key = key if isinstance(key, tuple) else (key,)
        ref = group[group[method_col] == reference]
        ref_scores = dict(zip(ref[seed_col], ref[metric]))
        for method, sel in group.groupby(method_col, sort=True):
            if method == reference:
                continue
            d = paired_difference(dict(zip(sel[seed_col], sel[metric])), ref_scores, **kw)
            rows.append({**dict(zip(keys, key)), method_col: method, "diff": d.diff, "low": d.low,
                         "high": d.high, "t_low": d.t_low, "t_high": d.t_high, "n": d.n,
                         "text": format_difference(d, digits)})
    return pd.DataFrame(rows)
