"""Predict-vs-ceiling pairs of wrk passes: this machine's speed drifts within seconds, so each
predict pass is judged against the ceiling pass run right after it."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from testing.wrk import WrkResult, run_wrk


@dataclass(frozen=True)
class Pair:
    """A predict pass and the ceiling pass run right after it, at the same concurrency."""

    predict: WrkResult
    ceiling: WrkResult

    @property
    def ratio(self) -> float:
        """Predict throughput as a fraction of the ceiling's; NaN when the ceiling answered none."""
        if self.ceiling.requests_per_second <= 0:
            return math.nan
        return self.predict.requests_per_second / self.ceiling.requests_per_second

    @property
    def has_errors(self) -> bool:
        return self.predict.has_errors or self.ceiling.has_errors


@dataclass(frozen=True)
class PairSummary:
    """The pair with the median ratio, a real measured pair, and the spread of the ratio."""

    median: Pair
    ratio_min: float
    ratio_max: float
    pairs: tuple[Pair, ...]

    @property
    def has_errors(self) -> bool:
        return any(pair.has_errors for pair in self.pairs)


def summarize_pairs(pairs: Sequence[Pair]) -> PairSummary:
    """Median pair by ratio (the lower middle one for an even count; NaN ratios sort last)."""
    if not pairs:
        raise ValueError("no pairs to summarize; run at least one pair (--pairs 1)")
    ordered = sorted(pairs, key=lambda pair: (math.isnan(pair.ratio), pair.ratio))
    ratios = [pair.ratio for pair in pairs if not math.isnan(pair.ratio)]
    return PairSummary(
        median=ordered[(len(ordered) - 1) // 2],
        ratio_min=min(ratios, default=math.nan),
        ratio_max=max(ratios, default=math.nan),
        pairs=tuple(pairs),
    )


def run_pairs(
    wrk: str,
    predict_url: str,
    ceiling_url: str,
    script_path: Path,
    concurrency: int,
    duration: int,
    pairs: int,
    labels: tuple[str, str] = ("predict", "ceiling"),
) -> PairSummary:
    """`pairs` pairs of wrk passes at `concurrency`: the first URL's, then the second's."""
    measured = []
    for index in range(pairs):
        predict = run_wrk(wrk, predict_url, concurrency, duration, script_path)
        ceiling = run_wrk(wrk, ceiling_url, concurrency, duration, script_path)
        pair = Pair(predict, ceiling)
        measured.append(pair)
        print(
            f"c={concurrency} pair {index + 1}/{pairs}: {labels[0]} "
            f"{predict.requests_per_second:.1f} req/s, {labels[1]} "
            f"{ceiling.requests_per_second:.1f} req/s, ratio {pair.ratio:.4f}"
            + (" (errors)" if pair.has_errors else ""),
            file=sys.stderr,
        )
    return summarize_pairs(measured)
