"""Which item counts, samples per item and metric readings do the paper's scores admit?

    python scripts/paper_granularity.py                      # analysis/paper_results.csv
    python scripts/paper_granularity.py --csv other.csv

A score is a mean of 0/1 outcomes over N items x k samples, so it is a multiple of
100 / (N k) percent. The paper prints two decimals: a reported value v admits (N, k) when
some integer c in [0, N k] has |100 c / (N k) - v| <= 0.005. For each table and benchmark
this prints the reported values, the readings that fit all of them, the coarsest of those
(fewest outcomes N k), how often n random 2-decimal values would all fit it by luck
((N k / 10^4)^n: small means strong evidence), the readings that fit only some (with how
many), and how unlikely the fit on the coarse grid would be if a finer reading k' were the
truth: each value would land on the coarse grid with probability k/k', all n with (k/k')^n.

Candidate readings (N from the benchmarks' data sets, as lm-eval and the data cards give
them; k up to what is plausible): AIME24/25 30 problems (k 1-16); MATH500 500 (k 1-8);
OlymMATH en-hard 100, en-easy 100, both tiers 200 (k 1-8); HumanEval 164 (k 1-8); MBPP
test 500, sanitized test 257, MBPP+ 378 (k 1-4); MMLU 14,042 questions; IFEval 541 prompts
(prompt-level) and 834 instructions (instruction-level), the strict and loose readings
sharing each grid; MedQA test 1,273. Rows that are not item means (Reward, Avg, analysis and
efficiency figures) are skipped.
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAPER_CSV = ROOT / "analysis" / "paper_results.csv"
HALF_ULP = 0.005  # two printed decimals


@dataclass(frozen=True)
class Reading:
    label: str       # what N counts, e.g. "prompt-level (541 prompts)"
    n_items: int
    ks: tuple[int, ...]


def _k(hi: int) -> tuple[int, ...]:
    return tuple(range(1, hi + 1))


READINGS: dict[str, tuple[Reading, ...]] = {
    "AIME24": (Reading("30 problems", 30, _k(16)),),
    "AIME25": (Reading("30 problems", 30, _k(16)),),
    "MATH500": (Reading("500 problems", 500, _k(8)),),
    "OlymMATH": (Reading("en-hard (100)", 100, _k(8)), Reading("en-easy (100)", 100, _k(8)),
                 Reading("en-hard + en-easy (200)", 200, _k(8))),
    "HumanEval": (Reading("164 problems", 164, _k(8)),),
    "MBPP": (Reading("test (500)", 500, _k(4)), Reading("sanitized test (257)", 257, _k(4)),
             Reading("MBPP+ (378)", 378, _k(4))),
    "MMLU": (Reading("14,042 questions (micro average)", 14042, (1,)),),
    "IFEval": (Reading("prompt-level, strict or loose (541 prompts)", 541, _k(4)),
               Reading("instruction-level, strict or loose (834 instructions)", 834, _k(4))),
    "MedQA": (Reading("test (1,273 questions)", 1273, (1,)),),
}


def admits(value: float, n_items: int, k: int, half_ulp: float = HALF_ULP) -> bool:
    """True when `value` (percent, rounded) can be c / (n_items k) for an integer c."""
    grid = n_items * k
    c = round(value / 100 * grid)
    return 0 <= c <= grid and abs(100 * c / grid - value) <= half_ulp + 1e-9


@dataclass
class Fit:
    table: str
    benchmark: str
    values: list[float]
    fits_all: list[tuple[Reading, int]]            # (reading, k) fitting every value
    fits_some: list[tuple[Reading, int, int]]      # (reading, k, values fitted), 0 < f < n

    @property
    def coarsest(self) -> tuple[Reading, int] | None:
        """The fitting reading with the fewest outcomes N k (the coarsest grid)."""
        return min(self.fits_all, key=lambda rk: rk[0].n_items * rk[1], default=None)

    @property
    def uninformative(self) -> bool:
        """Every candidate grid is finer than the printed 0.01: any value would fit."""
        return all(100 / (r.n_items * k) <= 2 * HALF_ULP for r, k in self.fits_all) \
            and bool(self.fits_all) and not self.fits_some

    def chance_under(self, reading: Reading, k: int) -> Fraction | None:
        """P(all values on the coarsest grid | the truth is (reading, k)), when the coarse grid
        divides the fine one; None otherwise."""
        coarse = self.coarsest
        if coarse is None:
            return None
        fine, grid = reading.n_items * k, coarse[0].n_items * coarse[1]
        if fine == grid or fine % grid:
            return None
        return Fraction(grid, fine) ** len(self.values)


def granularity(rows: list[dict[str, str]], readings: dict[str, tuple[Reading, ...]] = READINGS
                ) -> list[Fit]:
    """One Fit per (table, benchmark) of `rows` (paper_results.csv records) with readings."""
    groups: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        if row["benchmark"] in readings:
            groups.setdefault((row["table"], row["benchmark"]), []).append(float(row["score"]))
    fits = []
    for (table, bench), values in groups.items():
        fits_all, fits_some = [], []
        for reading in readings[bench]:
            for k in reading.ks:
                hits = sum(admits(v, reading.n_items, k) for v in values)
                if hits == len(values):
                    fits_all.append((reading, k))
                elif hits:
                    fits_some.append((reading, k, hits))
        fits.append(Fit(table, bench, values, fits_all, fits_some))
    return fits


def _ks(pairs) -> str:
    """'30 problems: k=8, 16' from [(reading, k), ...], readings in order of appearance."""
    by_label: dict[str, list[str]] = {}
    for reading, k, *hits in pairs:
        by_label.setdefault(reading.label, []).append(f"{k}" + (f" ({hits[0]})" if hits else ""))
    return "; ".join(f"{label}: k={', '.join(ks)}" for label, ks in by_label.items()) or "none"


def _chance(fit: Fit) -> str:
    coarse = fit.coarsest
    if coarse is None or fit.uninformative:
        return ""
    notes = []
    for reading, k in fit.fits_all:
        p = fit.chance_under(reading, k)
        if p is not None and reading == coarse[0] and k in (2 * coarse[1], 4 * coarse[1]):
            notes.append(f"k={k}: 1 in {round(1 / p):,}")
    return "; ".join(notes)


def _luck(fit: Fit) -> str:
    """How often values drawn at random to 2 decimals would all fit the coarsest reading:
    the evidence is strong when this is small."""
    if fit.coarsest is None or fit.uninformative:
        return ""
    reading, k = fit.coarsest
    per_value = min(1.0, 2 * HALF_ULP * reading.n_items * k / 100)
    return f"{per_value ** len(fit.values):.1g}"


def _coarsest(fit: Fit) -> str:
    if fit.coarsest is None:
        return "**none**"
    if fit.uninformative:
        return "any (grid finer than 0.01: uninformative)"
    grid = fit.coarsest[0].n_items * fit.coarsest[1]
    return " = ".join(f"{r.label}, k={k}" for r, k in fit.fits_all if r.n_items * k == grid)


def format_table(fits: list[Fit]) -> str:
    lines = ["| table | benchmark | reported | fits all values | coarsest | by luck | if finer "
             "(chance) | fits some (values fitted) |", "|---|---|---|---|---|---|---|---|"]
    for f in fits:
        lines.append(f"| {f.table} | {f.benchmark} | {', '.join(f'{v:.2f}' for v in f.values)} "
                     f"| {_ks(f.fits_all)} | {_coarsest(f)} | {_luck(f)} | {_chance(f)} "
                     f"| {_ks(f.fits_some) if f.fits_some else ''} |")
    return "\n".join(lines)


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    needed = {"table", "benchmark", "score"}
    if rows and not needed <= set(rows[0]):
        raise ValueError(f"{path}: needs columns {sorted(needed)}, has {sorted(rows[0])}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=PAPER_CSV, help="paper_results.csv")
    args = parser.parse_args(argv)
    print(format_table(granularity(read_rows(args.csv))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
