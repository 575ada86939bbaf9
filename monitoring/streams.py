"""Derived streams: every signal of a version turned into the values one calibrated detector watches.

Mean-change detectors miss what they are not fed (monitoring.md), so each signal becomes several streams:

| signal | stream | detector |
| --- | --- | --- |
| numeric feature | ``z = (x - mean) / std`` against the reference | two-sided ``CUSUM`` (mean) |
| numeric feature | ``z**2`` | one-sided ``CUSUM`` on its mean of 1 (variance) |
| numeric feature (NaN accepted) | missing-value indicator | ``BernoulliCUSUM`` (up) |
| categorical feature | indicator per known category, and of an unseen one | ``BernoulliCUSUM`` (up) |
| prediction score | ``z`` of the score | two-sided ``CUSUM`` |
| predicted class | indicator per class | ``BernoulliCUSUM`` (share up) |
| latency, latency tail, errors, client errors | see ``sluice.monitoring.health`` | live baselines |

``z`` is clipped to +-8 so one absurd value cannot raise an alarm alone. Every threshold comes from
``sluice.monitoring.calibration``; calibrations are cached by what they depend on, so versions with the same
reference (and the evaluation's many seeds) calibrate once.

A reference is an estimate from ``rows`` rows: the live stream's mean sits about ``1/sqrt(rows)`` of a
standard deviation away from it, its spread ``sqrt((kurtosis - 1) / rows)`` off in relative variance. A
CUSUM's false-alarm rate grows exponentially with such an offset, so its average over the offsets a
reference of that size can have is far above the rate at offset zero (170 rows: 4 alarms in 114 rows).
``widening`` adds to the allowance ``k`` what keeps that average at the calibrated rate: for a statistic
whose run length is ``exp(theta h)``, an offset ``d ~ N(0, v)`` of the increments' mean raises the mean rate
by ``exp((theta h)^2 v / 2 / ...)``, which an allowance wider by ``theta h v / (2 |mean increment|)``
cancels (``h v`` for a Gaussian CUSUM). Rates estimated from ``rows`` rows are calibrated
``RATE_MARGIN_SE`` standard errors above the estimate (``reference_rate``).
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from sluice.monitoring.bernoulli import BernoulliCUSUM
from sluice.monitoring.calibration import (
    Detector,
    Pilot,
    bernoulli_threshold,
    cusum_alarms,
    pilot,
    wald_theta,
)
from sluice.monitoring.cusum import CUSUM, update_each
from sluice.monitoring.reference import NumericReference

Z_CLIP = 8.0
#: The variance stream takes ``min(z**2, VARIANCE_CLIP**2)`` (see ``squared``).
VARIANCE_CLIP = 4.0
#: CUSUM allowance on z: tuned for a 0.5 sigma shift.
MEAN_K = 0.25
#: CUSUM allowance on z**2: tuned for a variance x1.5 (mean of z**2 from 1 to 1.5).
VARIANCE_K = 0.25
#: A category's or class's share is watched for a rise by this factor (30 % -> 40 %).
SHARE_LIFT = 4.0 / 3.0
#: The unseen-category rate watched for (at least; ``UNSEEN_LIFT`` times the reference's "other" share).
UNSEEN_P1 = 0.05
UNSEEN_LIFT = 5.0
#: A numeric feature's missing-value (NaN) share is watched for a rise by this factor (at least to UNSEEN_P1).
MISSING_LIFT = 2.0
#: Floors for rates estimated from few samples.
MIN_RATE = 0.001
#: The error rate watched for: this times the reference's (itself at least MIN_RATE).
ERROR_LIFT = 5.0
#: z**2 scales with the variance's error, and a scale error moves a skewed statistic's run length more
#: than a shift of its mean (measured: 3 holds the rate for references of 100 to 100,000 rows).
VARIANCE_SCALE_ERROR = 3.0
#: Standard errors a rate estimated from a reference's rows is raised by before calibration.
RATE_MARGIN_SE = 1.5

_cache: dict[tuple[Any, ...], Any] = {}
_cache_lock = threading.Lock()
T = TypeVar("T")


def _cached(key: tuple[Any, ...], compute: Callable[[], T]) -> T:
    with _cache_lock:
        found = _cache.get(key)
    if found is None:
        found = compute()
        with _cache_lock:
            _cache[key] = found
    return found


def squared(z: np.ndarray) -> np.ndarray:
    """The variance stream of z-scores: ``z**2``, capped at ``VARIANCE_CLIP**2`` so that the few
    outliers of a heavy-tailed feature (a reference of 200 rows has seen few of them) cannot raise an
    alarm alone; a wider spread still moves the bulk.

    >>> squared(np.array([0.5, -2.0, 7.0])).tolist()
    [0.25, 4.0, 16.0]
    """
    return np.asarray(np.minimum(z * z, VARIANCE_CLIP * VARIANCE_CLIP))


def standardize(values: np.ndarray, ref: NumericReference) -> np.ndarray:
    return np.clip((np.asarray(values, dtype=np.float64) - ref.mean) / ref.std, -Z_CLIP, Z_CLIP)


@dataclass
class Alarm:
    stream: Stream
    sample: int  # index of the sample in its stream
    at: float  # monotonic time of the request it came with


class Stream:
    """One derived stream and its detector: what it watches, its count of samples and its last alarms."""

    def __init__(self, kind: str, subject: str, signal: str, detector: Detector, detail: str = "") -> None:
        self.kind = kind  # drift | prediction | latency | errors | client_errors
        self.subject = subject  # feature name, or the kind
        self.signal = (
            signal  # mean | variance | share | unseen | score | class | latency | latency_tail | errors...
        )
        self.detail = detail  # the category or class a share stream watches
        self.detector = detector
        self.samples = 0
        self.alarms = 0
        self.last_alarms: deque[tuple[int, float]] = deque(maxlen=5)

    def feed(self, values: np.ndarray, times: np.ndarray) -> list[Alarm]:
        """Update the detector with ``values`` (1-D, one per element of ``times``): the alarms raised."""
        update_many = getattr(self.detector, "update_many", None)
        if update_many is None:  # River's PageHinkley: value by value
            return self.record(update_each(self.detector, values.tolist()), times, len(values))
        return self.record(update_many(values), times, len(values))

    def record(self, hits: np.ndarray, times: np.ndarray, count: int) -> list[Alarm]:
        """Account for ``count`` values fed to the detector elsewhere, alarming at indices ``hits``."""
        found = []
        for i in hits.tolist():
            alarm = Alarm(self, self.samples + i, float(times[i]))
            self.last_alarms.append((alarm.sample, alarm.at))
            found.append(alarm)
        self.samples += count
        self.alarms += len(hits)
        return found

    def state(self) -> dict[str, Any]:
        d: Any = self.detector
        statistic = getattr(d, "statistic", None)
        threshold = float(d.threshold)
        body: dict[str, Any] = {
            "signal": self.signal,
            "detector": type(d).__name__,
            "statistic": None if statistic is None else round(float(statistic), 4),
            "threshold": round(threshold, 4) if math.isfinite(threshold) else None,  # None: still learning
            "samples": self.samples,
            "alarms": self.alarms,
        }
        if self.detail:
            body["value"] = self.detail
        return body


def widening(theta_h: float, k: float, offset_variance: float) -> float:
    """What to add to a CUSUM's allowance ``k`` so that a random offset of its increments' mean (variance
    ``offset_variance``: the reference's estimation error) leaves the mean false-alarm rate as calibrated.

    ``theta_h`` is ``theta * h`` at the calibrated threshold (the log of the run length, about). With a
    reference of 100 rows a z-score CUSUM (k 0.25, h about 24) is widened by about 0.27, of 100,000 rows
    by 0.0003:

    >>> round(widening(12.0, 0.25, 1 / 100 + 0.0625 * 2 / 100), 2), round(widening(12.0, 0.25, 2e-5), 4)
    (0.27, 0.0005)
    """
    return theta_h * offset_variance / (2.0 * k)


#: ``theta`` of a stream whose increments are never positive (a constant feature): any change alarms.
MAX_THETA = 20.0


def _theta(increments: np.ndarray) -> float:
    try:
        return min(wald_theta(increments), MAX_THETA)
    except ValueError:
        return MAX_THETA


def _kurtosis(z: np.ndarray) -> float:
    return max(float(np.mean(z**4)), 1.0)


def mean_pilot(ref: NumericReference) -> Pilot:
    """The replay a z-score CUSUM's threshold comes from (cached, or seeded from a stored profile)."""

    def compute() -> Pilot:
        z = standardize(ref.draw(np.random.default_rng(1), 50_000), ref)
        return pilot(
            lambda h, z: cusum_alarms(np.stack([z - MEAN_K, -z - MEAN_K]), h),
            lambda rng, n: standardize(ref.draw(rng, n), ref),
            theta=min(_theta(z - MEAN_K), _theta(-z - MEAN_K)),
            kurtosis=_kurtosis(z),
        )

    return _cached(("mean", ref.key()), compute)


def variance_pilot(ref: NumericReference) -> Pilot:
    """The replay a z**2 CUSUM's threshold comes from (cached, or seeded from a stored profile)."""

    def compute() -> Pilot:
        z = standardize(ref.draw(np.random.default_rng(2), 50_000), ref)
        return pilot(
            lambda h, y: cusum_alarms(y - 1.0 - VARIANCE_K, h),
            lambda rng, n: squared(standardize(ref.draw(rng, n), ref)),
            theta=_theta(squared(z) - 1.0 - VARIANCE_K),
            kurtosis=_kurtosis(z),
        )

    return _cached(("variance", ref.key()), compute)


def seed_pilots(ref: NumericReference, mean: Pilot, variance: Pilot | None) -> None:
    """Take a reference's pilots as measured elsewhere (at conversion): no replay at load."""
    with _cache_lock:
        _cache.setdefault(("mean", ref.key()), mean)
        if variance is not None:
            _cache.setdefault(("variance", ref.key()), variance)


def mean_stream(kind: str, subject: str, ref: NumericReference, target_arl: float) -> Stream:
    """Two-sided CUSUM on the value's z-score, its allowance widened for a reference of few rows."""
    p = mean_pilot(ref)
    h, k = p.threshold(target_arl), MEAN_K
    if ref.rows:
        # The mean's error (1/n), and the spread's, which scales the increments (k^2 (kurtosis - 1) / n).
        offset = (1.0 + MEAN_K**2 * (p.kurtosis - 1.0)) / ref.rows
        k += widening(p.theta * h, MEAN_K, offset)
    return Stream(kind, subject, "score" if kind == "prediction" else "mean", CUSUM(k, h))


def variance_stream(subject: str, ref: NumericReference, target_arl: float) -> Stream:
    """One-sided CUSUM on z**2 (its mean is 1 under the reference), widened for a small reference."""
    p = variance_pilot(ref)
    h, k = p.threshold(target_arl), VARIANCE_K
    if ref.rows:
        # The variance's relative error, (kurtosis - 1) / n; and a bias: a sample's variance about its own
        # mean falls short of the population's by 1/n of it, and the mean's error adds its square (1/n).
        offset = VARIANCE_SCALE_ERROR * (p.kurtosis - 1.0) / ref.rows
        k += 2.0 / ref.rows + widening(p.theta * h, VARIANCE_K, offset)
    return Stream("drift", subject, "variance", CUSUM(k, h, mu0=1.0, two_sided=False))


def reference_rate(p: float, rows: int) -> float:
    """The rate to calibrate a share or rate CUSUM for, from ``p`` estimated on ``rows`` rows (0: exact).

    ``RATE_MARGIN_SE`` standard errors above ``p``, and at least ``1 / rows`` (a category a 100-row
    reference never saw can still hold 1 % of the traffic):

    >>> reference_rate(0.3, 0), round(reference_rate(0.3, 100), 3), reference_rate(0.0, 100)
    (0.3, 0.369, 0.01)
    """
    if rows <= 0:
        return p
    return max(p + RATE_MARGIN_SE * math.sqrt(p * (1.0 - p) / rows), 1.0 / rows)


def rate_stream(
    kind: str, subject: str, signal: str, p0: float, p1: float, target_arl: float, detail: str = ""
) -> Stream:
    """Bernoulli CUSUM from rate ``p0`` up to ``p1``."""
    p0 = min(max(p0, MIN_RATE), 0.99)
    p1 = min(max(p1, p0 * 1.01), 0.999)
    h = bernoulli_threshold(round(p0, 6), round(p1, 6), target_arl)
    return Stream(kind, subject, signal, BernoulliCUSUM(p0, p1, h), detail)


def share_p1(p0: float) -> float:
    return min(p0 * SHARE_LIFT, p0 + 0.5 * (1.0 - p0))


def log_latency(seconds: np.ndarray) -> np.ndarray:
    return np.asarray(np.log(np.maximum(seconds, 1e-7)), dtype=np.float64)
