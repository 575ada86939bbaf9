"""Thresholds set by replaying reference data to a target false-alarm rate, not by hand.

Default thresholds are not calibrated for anyone's data (monitoring.md: PageHinkley() raised 58-63 false
alarms per 100k on N(0,1), 3,107 on raw latency). Each detector here gets its threshold from a replay of
its own reference stream, split across the monitor so that the monitor as a whole meets its budget:
``per_detector_arl(target_per_100k, detectors)``.

Replaying to a rate of 1 in 100,000 directly would take millions of samples per detector. CUSUM-type
statistics make it cheaper: their average run length without change grows as ``C * exp(theta * h)``,
where ``theta`` is the positive root of ``E[exp(theta * increment)] = 1`` (Wald's identity; ``theta = 1``
for a log-likelihood ratio, ``2k`` for a Gaussian CUSUM). So the replay measures the run length at two
pilot thresholds where alarms are frequent, and extrapolates along ``theta`` to the target. The S0 rows of
the evaluation table check the result on a million samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import numpy as np

#: Pilot average run lengths measured by replay before extrapolating.
PILOT_ARLS = (200.0, 2000.0)
#: Alarms each pilot expects to see (the replay length is this times the pilot ARL).
PILOT_ALARMS = 30
#: Calibrate to this many times the target run length: replays from a profile's histogram have thinner
#: tails than the data (values stop at the sample's min and max), and extrapolation is approximate.
MARGIN = 2.0


class Detector(Protocol):
    @property
    def drift_detected(self) -> bool: ...

    def update(self, x: Any) -> None: ...


def per_detector_arl(target_per_100k: float, detectors: int, cap_per_100k: float = 1.0) -> float:
    """The run length each of ``detectors`` needs so the monitor raises ``target_per_100k`` at most.

    A single detector is held to ``cap_per_100k`` even when the monitor's budget would allow more.
    """
    share = min(target_per_100k / max(detectors, 1), cap_per_100k)
    return 100_000.0 / share


def wald_theta(increments: np.ndarray) -> float:
    """The positive root ``theta`` of ``mean(exp(theta * increments)) = 1``.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> round(wald_theta(rng.normal(-0.25, 1.0, 200_000)), 2)   # 2 * 0.25 for a unit Gaussian
    0.5
    """
    d = np.asarray(increments, dtype=np.float64)
    if not d.size or d.mean() >= 0 or d.max() <= 0:
        raise ValueError("increments must have a negative mean and some positive values")

    def log_mgf(theta: float) -> tuple[float, float]:
        """``log mean exp(theta * d)`` and its derivative (the tilted mean of ``d``)."""
        a = theta * d
        top = float(a.max())
        w = np.exp(a - top)
        total = float(w.sum())
        return top + math.log(total / d.size), float(w @ d) / total

    # The log-MGF is convex, zero at 0 and falling there: find a point right of the root, then Newton's
    # steps from the right fall monotonically onto it (a handful of passes over d, not 40 of bisection).
    theta = 1.0
    value, slope = log_mgf(theta)
    while value < 0:
        theta *= 2.0
        if theta > 1e4:
            return theta
        value, slope = log_mgf(theta)
    for _ in range(50):
        step = value / slope
        theta -= step
        if step < 1e-9 * theta:
            break
        value, slope = log_mgf(theta)
    return theta


def replay_alarms(detector: Detector, values: list[float]) -> int:
    """How many alarms ``detector`` raises on ``values`` (it resets itself after each)."""
    alarms = 0
    update = detector.update
    for x in values:
        update(x)
        if detector.drift_detected:
            alarms += 1
    return alarms


def cusum_alarms(increments: np.ndarray, threshold: float, block: int = 4096) -> int:
    """Alarms of a CUSUM (one row of ``increments`` per side) that restarts after each, vectorised.

    The same statistic as ``CUSUM`` and ``BernoulliCUSUM`` step by step (a test holds them equal), from
    Lindley's recursion in closed form: ``S_t = C_t - min(-S_0, min_{s<=t} C_s)`` with ``C`` the
    cumulative sum of the increments since the block's start.

    >>> cusum_alarms(np.array([[1.0, 1.0, -5.0, 1.0, 1.0, 1.0]]), threshold=1.5)
    2
    """
    inc = np.atleast_2d(np.asarray(increments, dtype=np.float64))
    n = inc.shape[1]
    state = np.zeros(inc.shape[0])
    alarms = 0
    start = 0
    while start < n:
        seg = inc[:, start : start + block]
        c = np.cumsum(seg, axis=1)
        s = c - np.minimum.accumulate(np.minimum(c, -state[:, None]), axis=1)
        over = np.flatnonzero((s > threshold).any(axis=0))
        if over.size:
            alarms += 1
            start += int(over[0]) + 1
            state = np.zeros(inc.shape[0])
        else:
            state = s[:, -1]
            start += seg.shape[1]
    return alarms


@dataclass(frozen=True)
class Pilot:
    """What a replay measured of one detector's stream, whatever the target: the run length ``arl`` at
    threshold ``h``, the exponent ``theta`` and the stream's kurtosis (for the widening of
    ``sluice.monitoring.streams``). Settings-free, so a converter can store it in the profile and any
    target false-alarm rate gets its threshold in closed form (``threshold``).
    """

    h: float
    arl: float
    theta: float
    kurtosis: float = 3.0

    def threshold(self, target_arl: float) -> float:
        """The threshold at which the detector has about ``target_arl`` samples between false alarms."""
        return self.h + math.log(MARGIN * target_arl / self.arl) / self.theta

    def to_json(self) -> list[float]:
        return [self.h, self.arl, self.theta, self.kurtosis]

    @classmethod
    def from_json(cls, body: Any) -> Pilot:
        h, arl, theta, kurtosis = (float(v) for v in body)
        return cls(h, arl, theta, kurtosis)


def pilot(
    count: Callable[[float, np.ndarray], int],
    draw: Callable[[np.random.Generator, int], np.ndarray],
    *,
    theta: float,
    kurtosis: float = 3.0,
    seed: int = 0,
) -> Pilot:
    """Replay the detector's stream at the pilot run lengths: what ``Pilot.threshold`` extrapolates from.

    ``count(threshold, values)`` replays ``values`` through the detector and counts its alarms;
    ``draw(rng, n)`` gives ``n`` samples of the detector's stream as it looks without drift.
    """
    rng = np.random.default_rng(seed)
    h = math.log(PILOT_ARLS[0]) / theta
    arl = PILOT_ARLS[0]
    for target in PILOT_ARLS:
        h = max(h + math.log(target / arl) / theta, 0.0)
        n = int(target * PILOT_ALARMS)
        arl = n / max(count(h, draw(rng, n)), 0.5)
    return Pilot(h, arl, theta, kurtosis)


def calibrate(
    count: Callable[[float, np.ndarray], int],
    draw: Callable[[np.random.Generator, int], np.ndarray],
    *,
    theta: float,
    target_arl: float,
    seed: int = 0,
) -> float:
    """The threshold at which a detector has about ``target_arl`` samples between false alarms."""
    return pilot(count, draw, theta=theta, seed=seed).threshold(target_arl)


@lru_cache(maxsize=256)
def bernoulli_threshold(p0: float, p1: float, target_arl: float) -> float:
    """The calibrated threshold of a ``BernoulliCUSUM(p0, p1)`` (cached: it depends on nothing else)."""
    w1, w0 = math.log(p1 / p0), math.log((1.0 - p1) / (1.0 - p0))

    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.random(n) < p0

    def count(h: float, x: np.ndarray) -> int:
        return cusum_alarms(np.where(x, w1, w0), h)

    return calibrate(count, draw, theta=1.0, target_arl=target_arl)
