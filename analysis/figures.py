"""Figures from run folders, one function per figure, each written as PNG and PDF.

    python -m analysis.figures multirun/micro/micro_math --out figures/

writes, where the runs hold the data (a figure without data is skipped with a note):
s_head_per_layer, nss_per_layer (results.json["analysis"]), mask_overlap (a GeoRA run's
adapter/mask_stats.json), reward_curves (train.reward_per_step), lr_robustness (final reward
and held-out score against the learning rate), rank_rho_heatmap, efficiency (ratios to
FullFT) and eval_scores. `singular_spectra(w0, w1, out)` takes tensors (call it from Python).

Every line is the mean over seeds with its 95% Student-t band (analysis.stats; no band
where n = 1), and every figure prints its source (folder and runs per method) at its foot.
Runs of one method that differ in lr, rank or rho are drawn apart ("pissa lr=0.0001").
`reward_curves(runs, ax)` and `eval_scores(runs, ax)` draw into a given axis (notebooks);
their `*_figure` twins write files like the rest.
"""
from __future__ import annotations

import argparse
from pathlib import Path

# The drawing lives in three modules; this one keeps the registry, the CLI and the names
# other code imports from analysis.figures (re-exported below):
#   analysis/figkit.py          shared helpers (seed bands, saving, skip notes, run groups)
#   analysis/figures_weights.py S_Head / NSS per layer, mask overlap, singular spectra
#   analysis/figures_runs.py    reward curves, lr robustness, rank x rho, efficiency, scores
from analysis.figkit import (  # noqa: F401  (re-exported)
    HYPER, SCORE_PREFERENCE, _skip, analysis_of, default_score, groups, smooth, source_text)
from analysis.figures_runs import (  # noqa: F401  (re-exported)
    EFFICIENCY, efficiency, eval_scores, eval_scores_figure, lr_robustness, rank_rho_heatmap,
    reward_curves, reward_curves_figure)
from analysis.figures_weights import (  # noqa: F401  (re-exported)
    mask_overlap, mask_stats_of, nss_per_layer, s_head_per_layer, singular_spectra)
from analysis.tables import collect_runs


# Every figure `python -m analysis.figures` makes: name -> make(runs, out, options) returning
# the files written, or None after printing why the runs lack its data. A new figure is one
# function with the @figure decorator; the CLI and the tests iterate this registry.
FIGURES: dict = {}


def figure(name: str):
    """Register `make(runs, out, options)` as the figure `name` (options: the CLI's
    window, reading, score)."""
    def register(make):
        if name in FIGURES:
            raise ValueError(f"figure {name!r} registered twice")
        FIGURES[name] = make
        return make
    return register


# ----------------------------------------------------------------- the registered set
@figure("s_head_per_layer")
def _s_head(runs, out, options):
    return s_head_per_layer(runs, out, options.get("reading"))


@figure("nss_per_layer")
def _nss(runs, out, options):
    return nss_per_layer(runs, out)


@figure("mask_overlap")
def _mask_overlap(runs, out, options):
    stats, source = mask_stats_of(runs)
    return mask_overlap(stats, out, source)


@figure("reward_curves")
def _reward_curves(runs, out, options):
    return reward_curves_figure(runs, out, options.get("window", 10))


@figure("lr_robustness")
def _lr_robustness(runs, out, options):
    return lr_robustness(runs, out, options.get("score"))


@figure("rank_rho_heatmap")
def _rank_rho(runs, out, options):
    return rank_rho_heatmap(runs, out, options.get("score"))


@figure("efficiency")
def _efficiency(runs, out, options):
    return efficiency(runs, out)


@figure("eval_scores")
def _eval_scores(runs, out, options):
    return eval_scores_figure(runs, out)


def _premise_part(runs, out, part: str, name: str):
    from analysis.premise import premise_frame, premise_per_part

    try:
        frame = premise_frame(runs)
    except ValueError as e:         # no run of a full-update method
        return _skip(name, str(e))
    return premise_per_part(frame, out, part) or _skip(name, "no per-part premise records")


@figure("premise_layer")
def _premise_layer(runs, out, options):
    return _premise_part(runs, out, "by_layer", "premise_layer")


@figure("premise_type")
def _premise_type(runs, out, options):
    return _premise_part(runs, out, "by_type", "premise_type")


@figure("geometry_over_training")
def _geometry_over_training(runs, out, options):
    from analysis.premise import geometry_over_training, geometry_series

    series = geometry_series(runs)
    if not series:
        return _skip("geometry_over_training", "no run logged geometry records "
                     "(analysis.track_every)")
    return geometry_over_training(series, out, source_text(runs)) or \
        _skip("geometry_over_training", "no geometry records to draw")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("roots", nargs="+", type=Path, help="folders searched for results.json")
    p.add_argument("--out", type=Path, default=Path("figures"))
    p.add_argument("--window", type=int, default=10, help="moving-average window (steps)")
    p.add_argument("--reading", help="S_Head reading (default: the analysis' default)")
    p.add_argument("--score", help="held-out score column, e.g. eval.math500 (default: guessed)")
    args = p.parse_args(argv)
    runs = collect_runs(*args.roots)
    if runs.empty:
        raise SystemExit(f"no results.json under {', '.join(map(str, args.roots))}")
    options = {"window": args.window, "reading": args.reading, "score": args.score}
    for name, make in FIGURES.items():
        for path in make(runs, args.out / name, options) or []:
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
