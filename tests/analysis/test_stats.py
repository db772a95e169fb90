"""Statistics against hand computation: t-table values and float arithmetic written out here."""
import math

import pytest
from scipy import stats as scipy_stats

from focaldet.analysis.stats import paired_difference, summarize, t_quantile


@pytest.mark.parametrize("df,table", [(1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (29, 2.045)])
def test_t_quantile_matches_printed_t_table(df, table):
    # two-sided 95 % critical values as printed in every statistics textbook
    assert t_quantile(0.95, df) == pytest.approx(table, abs=5e-4)
    assert t_quantile(0.95, df) == pytest.approx(scipy_stats.t.ppf(0.975, df), rel=1e-12)


def test_t_quantile_other_level():
    assert t_quantile(0.90, 4) == pytest.approx(2.132, abs=5e-4)  # t table, 90 % two-sided


def test_summary_of_three_seeds_by_hand():
    s = summarize([0.30, 0.32, 0.34])
    # mean 0.32; deviations -0.02, 0, 0.02 -> sample variance 0.0008 / 2 = 0.0004 -> std 0.02
    assert s.n == 3
    assert s.mean == pytest.approx(0.32, abs=1e-12)
    assert s.std == pytest.approx(0.02, abs=1e-12)
    half = 4.302652729911275 * 0.02 / math.sqrt(3)  # t_{0.975, 2} * s / sqrt(n)
    assert s.ci_low == pytest.approx(0.32 - half, abs=1e-9)
    assert s.ci_high == pytest.approx(0.32 + half, abs=1e-9)
    assert s.half_width == pytest.approx(0.049683, abs=1e-6)


def test_summary_skips_nan_and_none_and_counts_them_out():
    s = summarize([0.5, float("nan"), None, 0.7])
    assert s.n == 2
    assert s.mean == pytest.approx(0.6)
    assert s.std == pytest.approx(math.sqrt(0.02))  # (0.01 + 0.01) / 1
    assert s.ci_high - s.mean == pytest.approx(12.706204736174707 * math.sqrt(0.02) / math.sqrt(2))


def test_single_and_empty_have_no_spread():
    one = summarize([0.4])
    assert one.n == 1 and one.mean == 0.4
    assert math.isnan(one.std) and math.isnan(one.ci_low) and not one.excludes_zero()
    none = summarize([float("nan")])
    assert none.n == 0 and math.isnan(none.mean)


def test_paired_difference_by_hand():
    base = {0: 0.30, 1: 0.32, 2: 0.34, 3: 0.10}
    cand = {0: 0.35, 1: 0.36, 2: 0.40, 5: 0.99}  # seed 3 and 5 unpaired -> left out
    d = paired_difference(cand, base)
    # differences 0.05, 0.04, 0.06: mean 0.05, std 0.01
    assert d.n == 3
    assert d.mean == pytest.approx(0.05, abs=1e-9)
    assert d.std == pytest.approx(0.01, abs=1e-9)
    half = 4.302652729911275 * 0.01 / math.sqrt(3)
    assert (d.ci_low, d.ci_high) == (pytest.approx(0.05 - half, abs=1e-9), pytest.approx(0.05 + half, abs=1e-9))
    assert d.excludes_zero()
    # pairing matters: the unpaired intervals of these two arms overlap, the paired one excludes 0
    a, b = summarize([0.35, 0.36, 0.40]), summarize([0.30, 0.32, 0.34])
    assert a.ci_low < b.ci_high


def test_paired_difference_drops_diverged_seed():
    base = {0: 0.3, 1: 0.3, 2: 0.3}
    cand = {0: 0.2, 1: float("nan"), 2: 0.4}  # seed 1 diverged
    d = paired_difference(cand, base)
    assert d.n == 2 and d.mean == pytest.approx(0.0)
    assert not d.excludes_zero()
