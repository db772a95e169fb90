"""Small-sample statistics for comparing losses over seeds.

Everything here works on plain Python floats: a comparison has a handful of seeds, so clarity
beats vectorisation. Non-finite values (a metric that is NaN because its class group is empty,
or a run that diverged) are left out and the count ``n`` says how many values were used.

Confidence intervals use Student's t distribution with ``n - 1`` degrees of freedom:
``mean ± t_{1-(1-level)/2, n-1} · std / sqrt(n)`` with the sample standard deviation (ddof = 1).
Paired differences pair the two losses by seed, so seed-to-seed variation that both losses share
(the initialisation, the data order) cancels, and the CI is the one-sample t interval of the
per-seed differences.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from scipy import stats as _scipy_stats


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation and a two-sided t confidence interval of ``n`` values.

    ``std`` and the interval are NaN when ``n < 2`` (one seed says nothing about spread);
    everything is NaN when ``n == 0``."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float
    level: float = 0.95

    @property
    def half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2

    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of 0 (a 'significant' difference)."""
        return self.n >= 2 and (self.ci_low > 0 or self.ci_high < 0)

    def to_dict(self) -> dict:
        return {"n": self.n, "mean": self.mean, "std": self.std, "ci_low": self.ci_low,
                "ci_high": self.ci_high, "level": self.level}


def t_quantile(level: float, df: int) -> float:
    """Two-sided Student-t critical value: the ``1 - (1 - level)/2`` quantile with ``df`` degrees
    of freedom (12.706 for level 0.95 and df = 1, 4.303 for df = 2)."""
    if not 0 < level < 1:
        raise ValueError(f"confidence level must lie in (0, 1), got {level}")
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    return float(_scipy_stats.t.ppf(1 - (1 - level) / 2, df))


def _finite(values: Sequence[Optional[float]]) -> list[float]:
    out = []
    for v in values:
        if v is None:
            continue
        v = float(v)
        if math.isfinite(v):
            out.append(v)
    return out


def summarize(values: Sequence[Optional[float]], level: float = 0.95) -> Summary:
    """Mean ± std and the t confidence interval of the finite entries of ``values``."""
    xs = _finite(values)
    n = len(xs)
    nan = float("nan")
    if n == 0:
        return Summary(0, nan, nan, nan, nan, level)
    mean = math.fsum(xs) / n
    if n == 1:
        return Summary(1, mean, nan, nan, nan, level)
    var = math.fsum((x - mean) ** 2 for x in xs) / (n - 1)
    std = math.sqrt(var)
    half = t_quantile(level, n - 1) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half, level)


def paired_difference(candidate: Mapping[int, Optional[float]], baseline: Mapping[int, Optional[float]],
                      level: float = 0.95) -> Summary:
    """Summary of ``candidate[seed] - baseline[seed]`` over the seeds where both are finite.

    ``candidate`` and ``baseline`` map a seed to a metric value (None / NaN for a diverged run or
    an empty group); unpaired seeds are skipped, never imputed."""
    diffs = []
    for seed in sorted(set(candidate) & set(baseline)):
        a, b = _finite([candidate[seed]]), _finite([baseline[seed]])
        if a and b:
            diffs.append(a[0] - b[0])
    return summarize(diffs, level)
