"""Latency histogram and load-test report: statistics, text, JSON and PNG output."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

REPORTED_PERCENTILES: tuple[float, ...] = (50.0, 90.0, 99.0, 99.9)


class LatencyHistogram:
    """Counts of latencies in log-spaced buckets: constant memory whatever the number of samples.

    Bucket 0 holds values below `lowest`, buckets 1..B are [lowest * ratio**(k-1),
    lowest * ratio**k) and the last bucket holds values from `highest` up. A percentile
    is reported as the geometric middle of its bucket, so it is within about half the
    ratio (0.5 % by default) of the true value; min, max and mean are exact.
    """

    def __init__(self, lowest: float = 10e-6, highest: float = 60.0, ratio: float = 1.01) -> None:
        if not 0 < lowest < highest:
            raise ValueError(f"need 0 < lowest < highest; got lowest={lowest}, highest={highest}")
        if not ratio > 1:
            raise ValueError(f"ratio must be above 1, e.g. 1.01 for 1 % buckets; got {ratio}")
        self.lowest = lowest
        self.highest = highest
        self.ratio = ratio
        self._inv_log_ratio = 1.0 / math.log(ratio)
        log_buckets = math.ceil(math.log(highest / lowest) * self._inv_log_ratio)
        self._last = log_buckets + 1
        self.counts: np.ndarray = np.zeros(log_buckets + 2, dtype=np.int64)
        self._count = 0
        self._sum = 0.0
        self._min = math.inf
        self._max = -math.inf

    def record(self, seconds: float) -> None:
        # On the load client's hot path: kept inline, one log per sample.
        if seconds >= self.lowest:
            bucket = min(int(math.log(seconds / self.lowest) * self._inv_log_ratio) + 1, self._last)
        elif seconds >= 0:
            bucket = 0
        else:  # negative or NaN
            raise ValueError(f"a latency must be a number of seconds >= 0; got {seconds}")
        self.counts[bucket] += 1
        self._count += 1
        self._sum += seconds
        if seconds > self._max:
            self._max = seconds
        if seconds < self._min:
            self._min = seconds

    def record_many(self, seconds: np.ndarray) -> None:
        """Record an array of latencies at once (vectorised; same result as `record` each)."""
        values = np.asarray(seconds, dtype=np.float64).ravel()
        if values.size == 0:
            return
        if not np.all(values >= 0):
            raise ValueError("latencies must be numbers of seconds >= 0; got a negative or NaN")
        index = np.zeros(values.size, dtype=np.int64)
        above = values >= self.lowest
        with np.errstate(divide="ignore"):
            logs = np.log(values[above] / self.lowest) * self._inv_log_ratio
        index[above] = np.minimum(logs.astype(np.int64) + 1, self._last)
        self.counts += np.bincount(index, minlength=self.counts.size)
        self._count += int(values.size)
        self._sum += float(values.sum())
        self._max = max(self._max, float(values.max()))
        self._min = min(self._min, float(values.min()))

    def merge(self, other: LatencyHistogram) -> None:
        """Add `other`'s samples to this histogram (e.g. the histograms of several clients)."""
        if (other.lowest, other.highest, other.ratio) != (self.lowest, self.highest, self.ratio):
            raise ValueError(
                "cannot merge histograms with different buckets: "
                f"({self.lowest}, {self.highest}, {self.ratio}) vs "
                f"({other.lowest}, {other.highest}, {other.ratio}); build both with the same "
                "lowest, highest and ratio"
            )
        self.counts += other.counts
        self._count += other._count
        self._sum += other._sum
        self._max = max(self._max, other._max)
        self._min = min(self._min, other._min)

    @property
    def count(self) -> int:
        return self._count

    @property
    def max(self) -> float:
        return self._max if self._count else math.nan

    @property
    def min(self) -> float:
        return self._min if self._count else math.nan

    @property
    def mean(self) -> float:
        return self._sum / self._count if self._count else math.nan

    def percentile(self, q: float) -> float:
        """The q-th percentile (0..100) in seconds, like numpy's `inverted_cdf`; NaN when empty."""
        if not 0 <= q <= 100:
            raise ValueError(f"a percentile is between 0 and 100; got {q}")
        if self._count == 0:
            return math.nan
        # round() absorbs float noise such as 99.9 * 1000 / 100 = 999.0000000000001.
        rank = max(1, math.ceil(round(q * self._count / 100, 9)))
        # The smallest and the largest sample are known exactly.
        if rank == 1:
            return self._min
        if rank == self._count:
            return self._max
        bucket = int(np.searchsorted(np.cumsum(self.counts), rank))
        return min(max(self._bucket_middle(bucket), self._min), self._max)

    def _bucket_middle(self, bucket: int) -> float:
        if bucket == 0:
            return self.lowest / 2
        if bucket == self._last:
            return self._max
        return self.lowest * self.ratio ** (bucket - 0.5)

    def bucket_edges(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper edge in seconds of every bucket (0 and inf at the two ends)."""
        k = np.arange(self.counts.size, dtype=np.float64)
        lower = self.lowest * self.ratio ** (k - 1)
        upper = self.lowest * self.ratio**k
        lower[0], upper[0] = 0.0, self.lowest
        upper[-1] = math.inf
        return lower, upper

    def to_dict(self) -> dict[str, Any]:
        """The layout, exact statistics and the non-empty buckets as [bucket index, count]."""
        nonzero = np.flatnonzero(self.counts)
        return {
            "lowest_s": self.lowest,
            "highest_s": self.highest,
            "ratio": self.ratio,
            "count": self._count,
            "sum_s": self._sum,
            "min_s": self.min,
            "max_s": self.max,
            "buckets": [[int(i), int(self.counts[i])] for i in nonzero],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyHistogram:
        histogram = cls(data["lowest_s"], data["highest_s"], data["ratio"])
        for index, count in data["buckets"]:
            histogram.counts[index] = count
        histogram._count = int(data["count"])
        histogram._sum = float(data["sum_s"])
        if histogram._count:
            histogram._min = float(data["min_s"])
            histogram._max = float(data["max_s"])
        return histogram


@dataclass
class LoadReport:
    """What one load-test run did: requests, answers, client errors, time and latency."""

    url: str
    payload: str
    concurrency: int
    requests_planned: int
    requests_sent: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    client_errors: dict[str, int] = field(default_factory=dict)
    wall_seconds: float = 0.0
    # Open-loop (--rate) mode only: the target rate, and how many requests started late
    # because every one of the `concurrency` slots was busy at their scheduled time
    # (see LATE_AFTER_SECONDS in async_predictions); their latency counts from the schedule.
    rate: float | None = None
    late: int = 0
    # "completed", "duration" (the --duration cap was reached) or "interrupted" (Ctrl-C).
    stop_reason: str = "completed"
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    # Plain sentences for the reader, e.g. that the credentials were refused.
    notes: list[str] = field(default_factory=list)

    @classmethod
    def merged(cls, reports: list[LoadReport]) -> LoadReport:
        """One report of client processes that ran side by side (started together).

        Counts add up, the wall time is the longest, and the latency histograms are merged
        bucket by bucket, so the percentiles are those of all samples together.
        """
        if not reports:
            raise ValueError("no reports to merge")
        merged = cls(
            url=reports[0].url,
            payload=reports[0].payload,
            concurrency=sum(r.concurrency for r in reports),
            requests_planned=sum(r.requests_planned for r in reports),
            requests_sent=sum(r.requests_sent for r in reports),
            wall_seconds=max(r.wall_seconds for r in reports),
            rate=None if reports[0].rate is None else sum(r.rate or 0 for r in reports),
            late=sum(r.late for r in reports),
            stop_reason=next(
                (
                    reason
                    for reason in ("interrupted", "duration")
                    if any(r.stop_reason == reason for r in reports)
                ),
                "completed",
            ),
            latency=LatencyHistogram(
                reports[0].latency.lowest, reports[0].latency.highest, reports[0].latency.ratio
            ),
        )
        for report in reports:
            for status, count in report.statuses.items():
                merged.statuses[status] = merged.statuses.get(status, 0) + count
            for kind, count in report.client_errors.items():
                merged.client_errors[kind] = merged.client_errors.get(kind, 0) + count
            merged.latency.merge(report.latency)
            merged.notes += [note for note in report.notes if note not in merged.notes]
        return merged

    @property
    def answers(self) -> int:
        return sum(self.statuses.values())

    @property
    def errors(self) -> int:
        return sum(self.client_errors.values())

    @property
    def throughput(self) -> float:
        """Answers received per second of wall time."""
        return self.answers / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def is_success(self) -> bool:
        """Every answer was 2xx and no request failed in the client."""
        all_2xx = all(200 <= status < 300 for status in self.statuses)
        return all_2xx and not self.client_errors

    def latency_ms(self) -> dict[str, float]:
        stats = {
            _percentile_name(q): self.latency.percentile(q) * 1000 for q in REPORTED_PERCENTILES
        }
        stats["max"] = self.latency.max * 1000
        stats["mean"] = self.latency.mean * 1000
        stats["min"] = self.latency.min * 1000
        return stats

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "payload": self.payload,
            "concurrency": self.concurrency,
            "rate": self.rate,
            "requests_planned": self.requests_planned,
            "requests_sent": self.requests_sent,
            "answers": self.answers,
            "statuses": {str(status): n for status, n in sorted(self.statuses.items())},
            "client_errors": dict(sorted(self.client_errors.items())),
            "late": self.late,
            "stop_reason": self.stop_reason,
            "wall_seconds": self.wall_seconds,
            "throughput_rps": self.throughput,
            "success": self.is_success,
            "latency_ms": self.latency_ms(),
            "latency_histogram": self.latency.to_dict(),
            "notes": list(self.notes),
        }

    def format_text(self) -> str:
        mode = f"open loop at {self.rate:g} req/s" if self.rate else "closed loop"
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items())) or "none"
        errors = ", ".join(f"{k}: {n}" for k, n in sorted(self.client_errors.items())) or "none"
        latency = "  ".join(f"{name} {_ms(value)}" for name, value in self.latency_ms().items())
        lines = [
            f"POST {self.url} ({self.payload}, {mode}, concurrency {self.concurrency})",
            f"requests sent    {self.requests_sent} of {self.requests_planned}",
            f"answers          {self.answers} ({statuses})",
            f"client errors    {self.errors} ({errors})",
            f"wall time        {self.wall_seconds:.2f} s",
            f"throughput       {self.throughput:.1f} req/s",
            f"latency ms       {latency}",
        ]
        if self.rate:
            lines.append(
                f"late             {self.late} (started late; latency counted from schedule)"
            )
        if self.stop_reason != "completed":
            lines.append(f"stopped early    {self.stop_reason}")
        lines += [f"note             {note}" for note in self.notes]
        lines.append("result           " + ("OK" if self.is_success else "FAILED"))
        return "\n".join(lines)


def _percentile_name(q: float) -> str:
    return f"p{q:g}"


def _ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def save_json(report: LoadReport, path: Path | str) -> None:
    # orjson writes NaN (an empty histogram's statistics) as null, which JSON allows.
    Path(path).write_bytes(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2) + b"\n")


def save_plot(report: LoadReport, path: Path | str) -> None:
    """Write the latency histogram as a PNG; matplotlib is imported only here."""
    # The Agg canvas, not pyplot: no global backend state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    histogram = report.latency
    mode = f"open loop at {report.rate:g} req/s" if report.rate else "closed loop"
    axes.set_title(
        f"POST {report.url}\n{report.payload}, {mode}, concurrency {report.concurrency}: "
        f"{histogram.count} answers, {report.throughput:.0f} req/s",
        fontsize=10,
    )
    if histogram.count == 0:
        axes.text(0.5, 0.5, "no answers", ha="center", va="center", transform=axes.transAxes)
    else:
        _draw_histogram(axes, histogram)
    figure.savefig(str(path), format="png")


def _draw_histogram(axes: Any, histogram: LatencyHistogram) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    nonzero = np.flatnonzero(histogram.counts)
    first, last = int(nonzero[0]), int(nonzero[-1])
    lower, upper = histogram.bucket_edges()
    edges = np.append(lower[first : last + 1], upper[last]) * 1000
    # A log axis needs finite positive edges: the open-ended end buckets end at min and max.
    if edges[0] <= 0:
        edges[0] = histogram.min * 1000 if histogram.min > 0 else histogram.lowest * 1000 / 2
    if math.isinf(edges[-1]):
        edges[-1] = max(histogram.max * 1000, edges[-2] * histogram.ratio)
    axes.stairs(histogram.counts[first : last + 1], edges, fill=True, alpha=0.6, color="tab:blue")
    axes.set_xscale("log")
    # Plain numbers at 1-2-5 steps read better than 4x10^1 on a latency axis.
    axes.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_xlabel("latency (ms)")
    axes.set_ylabel(f"answers per bucket ({(histogram.ratio - 1) * 100:g} % wide)")
    styles = ("tab:green", "tab:orange", "tab:red", "tab:purple")
    for q, color in zip(REPORTED_PERCENTILES, styles, strict=True):
        value = histogram.percentile(q) * 1000
        label = f"{_percentile_name(q)} {value:.2f} ms"
        axes.axvline(value, linestyle="--", linewidth=1.2, color=color, label=label)
    axes.axvline(
        histogram.max * 1000,
        linewidth=1.2,
        color="black",
        label=f"max {_ms(histogram.max * 1000)} ms",
    )
    axes.legend(loc="upper left", fontsize=9)
