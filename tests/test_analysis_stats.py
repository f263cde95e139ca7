"""Intervals over seeds and paired differences, against values computed by hand."""
import itertools
import math

import numpy as np
import pandas as pd
import pytest

from analysis import stats

# Student-t critical values t_{0.975, df} from printed tables (no scipy in the test).
T975 = {1: 12.7062047, 2: 4.3026527, 4: 2.7764451, 9: 2.2621572, 29: 2.0452296}


@pytest.mark.parametrize("df", sorted(T975))
def test_t_quantile_matches_the_table(df):
    assert stats.t_quantile(0.95, df) == pytest.approx(T975[df], abs=1e-6)


def test_mean_interval_by_hand():
    iv = stats.mean_interval([1.0, 2.0, 3.0])
    # mean 2, sd 1 (n - 1), half width t_{0.975,2} / sqrt(3)
    assert (iv.mean, iv.sd, iv.n) == (2.0, 1.0, 3)
    assert iv.half_width == pytest.approx(T975[2] / math.sqrt(3))
    assert (iv.low, iv.high) == pytest.approx((2 - T975[2] / math.sqrt(3), 2 + T975[2] / math.sqrt(3)))
    five = stats.mean_interval([10, 12, 9, 11, 13])
    assert five.half_width == pytest.approx(T975[4] * float(np.std([10, 12, 9, 11, 13], ddof=1)) / math.sqrt(5))
    assert stats.mean_interval([1.0, 2.0, 3.0], confidence=0.5).half_width < iv.half_width


def test_missing_values_small_n_and_formatting():
    assert stats.mean_interval([4.0, None, float("nan"), "x"]) == stats.Interval(4.0, None, None, 1)
    assert stats.mean_interval([]) == stats.Interval(None, None, None, 0)
    assert stats.format_interval(stats.mean_interval([58.3])) == "58.3 (n=1, no interval)"
    assert stats.format_interval(stats.mean_interval([])) == "n/a (n=0)"
    assert stats.format_interval(stats.Interval(58.3, 56.2, 60.4, 3)) == "58.3 ± 2.1 (n=3)"
    assert stats.format_interval(stats.Interval(0.5, 0.4, 0.6, 2), digits=3) == "0.500 ± 0.100 (n=2)"
    with pytest.raises(ValueError, match="confidence=1.5"):
        stats.t_quantile(1.5, 3)


def _exact_bootstrap_quantiles(d, q):
    """Percentiles of the bootstrap distribution of the mean, by enumerating all n^n resamples."""
    means = np.array([np.mean(c) for c in itertools.product(d, repeat=len(d))])
    return np.quantile(means, q)


def test_paired_difference_matches_the_exact_bootstrap():
    a = {0: 60.0, 1: 61.0, 2: 59.0, 3: 62.0, 4: 57.0, 9: 50.0}     # seed 9: no reference
    ref = {0: 58.0, 1: 58.5, 2: 58.0, 3: 58.0, 4: 58.5, 7: 40.0}   # seed 7: no method
    d = stats.paired_difference(a, ref, n_resamples=20_000)
    diffs = [2.0, 2.5, 1.0, 4.0, -1.5]
    assert d.seeds == (0, 1, 2, 3, 4) and d.n == 5
    assert d.diff == pytest.approx(np.mean(diffs))
    lo, hi = _exact_bootstrap_quantiles(diffs, [0.025, 0.975])
    assert d.low == pytest.approx(lo, abs=0.15) and d.high == pytest.approx(hi, abs=0.15)
    half = T975[4] * np.std(diffs, ddof=1) / math.sqrt(5)
    assert (d.t_low, d.t_high) == pytest.approx((np.mean(diffs) - half, np.mean(diffs) + half))
    # seeded: the same call gives the same interval, another seed a (slightly) different one
    assert stats.paired_difference(a, ref, n_resamples=2000) == stats.paired_difference(a, ref, n_resamples=2000)
    assert stats.paired_difference(a, ref, n_resamples=2000, seed=1) != \
        stats.paired_difference(a, ref, n_resamples=2000)


def test_paired_difference_small_n():
    one = stats.paired_difference({0: 3.0, 1: 5.0}, {0: 1.0})
    assert (one.diff, one.low, one.high, one.n) == (2.0, None, None, 1)
    assert stats.format_difference(one) == "+2.0 (n=1, n/a)"
    none = stats.paired_difference({0: 3.0}, {1: 1.0})
    assert none.n == 0 and stats.format_difference(none) == "n/a (n=0)"
    same = stats.paired_difference({0: 3.0, 1: 4.0}, {0: 1.0, 1: 2.0})
    assert (same.low, same.high) == (2.0, 2.0)
    assert stats.format_difference(same) == "+2.0 [+2.0, +2.0] (n=2)"


def _runs():
    rows = []
    for seed, (g, lo, pi) in enumerate([(58.0, 60.0, 18.0), (59.0, 61.0, 17.0), (57.0, 59.5, 20.0)]):
        rows += [dict(method="geora", lr=5e-4, seed=seed, score=g),
                 dict(method="lora", lr=5e-4, seed=seed, score=lo),
                 dict(method="pissa", lr=5e-4, seed=seed, score=pi)]
    rows.append(dict(method="pissa", lr=1e-4, seed=0, score=58.5))
    return pd.DataFrame(rows)


def test_seed_and_paired_tables():
    runs = _runs()
    t = stats.seed_table(runs, "score", by=("method", "lr")).set_index(["method", "lr"])
    assert t.loc[("geora", 5e-4), "n"] == 3 and t.loc[("geora", 5e-4), "mean"] == pytest.approx(58.0)
    assert t.loc[("geora", 5e-4), "text"] == f"58.0 ± {T975[2] / math.sqrt(3):.1f} (n=3)"
    assert t.loc[("pissa", 1e-4), "text"] == "58.5 (n=1, no interval)"
    p = stats.paired_table(runs, "score", reference="geora", by=("lr",)).set_index(["lr", "method"])
    assert p.loc[(5e-4, "lora"), "diff"] == pytest.approx(np.mean([2.0, 2.0, 2.5]))
    assert p.loc[(5e-4, "pissa"), "high"] < 0                          # resolved: pissa is worse
    assert p.loc[(1e-4, "pissa"), "n"] == 0                            # no geora run at 1e-4
    assert ("5e-4", "geora") not in p.index
    with pytest.raises(KeyError, match="'reward'"):
        stats.seed_table(runs, "reward")
