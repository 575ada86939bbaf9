"""Paired shadow streams: how a shadow version's answers differ from the primary's, request by request.

A shadow runs a copy of a request beside the primary (``sluice.server.rollouts.shadowing``), and the
rollout gate judges its disagreement rate against a fixed limit. What a fixed limit cannot see is the
relationship between the two versions *changing*: two models that agreed on 98 % of requests at first and
now agree on 90 %, because traffic moved into a region where they differ. So each shadow version gets two
derived streams of pairs, both against its own first ``reference_size`` pairs:

| stream | detector |
| --- | --- |
| disagreement indicator (the comparison's verdict) | ``BernoulliCUSUM``, p0 -> max(2 p0, p0 + 2 %) |
| paired score difference per row (shadow - primary), standardised | two-sided ``CUSUM`` on its mean |

The score is the version's prediction score (positive-class probability, top probability, or value), as
``sluice.monitoring.version`` takes it. Alarms are incidents of kind ``shadow``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

from sluice.monitoring.calibration import per_detector_arl
from sluice.monitoring.layout import Layout, WatchOptions, row_scores
from sluice.monitoring.reference import NumericReference
from sluice.monitoring.streams import MIN_RATE, Alarm, Stream, mean_stream, rate_stream, standardize

#: The disagreement rate watched for: twice the reference's, and at least this much above it.
DISAGREEMENT_STEP = 0.02


class Pair(NamedTuple):
    """One compared request: the primary's and the shadow's outputs and the comparison's verdict."""

    primary: dict[str, np.ndarray]
    shadow: dict[str, np.ndarray]
    agree: bool
    at: float  # monotonic time


class ShadowPairs:
    """The paired streams of one shadow version of a model."""

    def __init__(self, model: str, version: int, layout: Layout, options: WatchOptions, budget: int) -> None:
        self.model = model
        self.version = version
        self.layout = layout
        self.options = options
        self.pairs = 0
        self.rows = 0
        self._arl = per_detector_arl(options.target_false_alarms_per_100k, budget)
        self.streams: list[Stream] = []
        self.disagreement_rate: float | None = None
        self.difference_ref: NumericReference | None = None
        self._held_agree: list[bool] = []
        self._held_diff: list[np.ndarray] = []

    def steps(self, chunk: Sequence[Pair]) -> Iterator[list[Alarm]]:
        """Feed ``chunk`` (one step: a handful of numpy calls): the alarms raised."""
        self.pairs += len(chunk)
        agree = np.asarray([p.agree for p in chunk], dtype=bool)
        at = np.asarray([p.at for p in chunk], dtype=np.float64)
        diffs = [self._difference(p) for p in chunk]
        kept = [d for d in diffs if d is not None]
        diff = np.concatenate(kept) if kept else np.empty(0)
        diff_at = np.repeat(at[[d is not None for d in diffs]], [len(d) for d in kept])
        self.rows += len(diff)
        if not self.streams:
            self._collect(agree, diff)
            yield []
            return
        alarms = self.streams[0].feed(~agree, at)
        if len(self.streams) > 1 and self.difference_ref is not None and diff.size:
            alarms += self.streams[1].feed(standardize(diff, self.difference_ref), diff_at)
        yield alarms

    def _difference(self, pair: Pair) -> np.ndarray | None:
        name = self.layout.score_output
        if name is None or name not in pair.primary or name not in pair.shadow:
            return None
        probabilities = self.layout.score_is_probability
        a, b = row_scores(pair.primary[name], probabilities), row_scores(pair.shadow[name], probabilities)
        if a.shape != b.shape:
            return None
        d = b - a
        kept: np.ndarray = d[np.isfinite(d)]
        return kept

    def _collect(self, agree: np.ndarray, diff: np.ndarray) -> None:
        self._held_agree += agree.tolist()
        if diff.size:
            self._held_diff.append(diff)
        if len(self._held_agree) < self.options.reference_size:
            return
        p0 = max(float(np.mean(np.logical_not(self._held_agree))), MIN_RATE)
        self.disagreement_rate = p0
        self.streams = [
            rate_stream(
                "shadow", "shadow", "disagreement", p0, max(2 * p0, p0 + DISAGREEMENT_STEP), self._arl
            )
        ]
        if self._held_diff:
            ref = NumericReference.from_values(np.concatenate(self._held_diff))
            if ref is not None and ref.std > 1e-9:
                self.difference_ref = ref
                stream = mean_stream("shadow", "shadow", ref, self._arl)
                stream.signal = "difference"
                self.streams.append(stream)
        self._held_agree, self._held_diff = [], []

    def snapshot(self, when: Any) -> dict[str, Any]:
        """What the monitoring endpoint shows under ``shadow`` (``when`` formats a monotonic time)."""
        ref = self.difference_ref
        return {
            "pairs": self.pairs,
            "rows": self.rows,
            "reference_from": "first_pairs" if self.streams else "collecting",
            "reference": {
                "disagreement_rate": self.disagreement_rate,
                "difference": None
                if ref is None
                else {"mean": ref.mean, "std": ref.std, "quantiles": ref.quantiles},
            },
            "detectors": [
                {
                    **s.state(),
                    "last_alarms": [{"sample": n, "time": when(at)} for n, at in s.last_alarms],
                }
                for s in self.streams
            ],
        }
