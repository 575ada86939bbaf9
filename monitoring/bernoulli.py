"""A Bernoulli CUSUM: the likelihood-ratio CUSUM for a change in the rate of a 0/1 stream.

For rare events (errors, latency-tail exceedances, an unseen category) mean-change detectors such as
ADWIN need thousands of samples; the Bernoulli CUSUM accumulates the log-likelihood ratio of the new rate
``p1`` against the reference rate ``p0``:

    S_t = max(0, S_{t-1} + w(x_t)),   w(1) = ln(p1 / p0),   w(0) = ln((1 - p1) / (1 - p0))

and raises an alarm when ``S_t`` exceeds ``threshold``. With ``p1 < p0`` it watches for a drop instead.
Because the increments are a log-likelihood ratio, the average run length without change grows as
``exp(threshold)`` (Wald), which is what ``sluice.monitoring.calibration`` relies on.

``update_many`` feeds a whole array in one call, with the closed form of ``sluice.monitoring.cusum`` (and its
note on rounding: the sums agree with ``update``'s to about 1e-12).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from river import base

from sluice.monitoring.cusum import DENSE, lindley_run


class BernoulliCUSUM(base.BinaryDriftDetector):
    """CUSUM for a change of the share of 1s from ``p0`` to ``p1``, with River's detector contract.

    Parameters
    ----------
    p0
        The reference rate.
    p1
        The rate to detect (above ``p0`` for an increase, below for a decrease).
    threshold
        Decision interval on the log-likelihood-ratio sum.

    Examples
    --------
    >>> import random
    >>> from sluice.monitoring.bernoulli import BernoulliCUSUM

    An error rate that creeps from 0.1 % to 0.5 %:

    >>> rng = random.Random(3)
    >>> detector = BernoulliCUSUM(p0=0.001, p1=0.005, threshold=6.0)
    >>> stream = [rng.random() < 0.001 for _ in range(20_000)] + [rng.random() < 0.005 for _ in range(5_000)]
    >>> for i, x in enumerate(stream):
    ...     detector.update(x)
    ...     if detector.drift_detected:
    ...         print(f"change detected at index {i}")
    ...         break
    change detected at index 20572

    >>> detector.update(False)
    >>> detector.statistic
    0.0
    """

    def __init__(self, p0: float = 0.01, p1: float = 0.05, threshold: float = 8.0):
        super().__init__()
        if not (0.0 < p0 < 1.0 and 0.0 < p1 < 1.0) or p0 == p1:
            raise ValueError(f"need 0 < p0, p1 < 1 and p0 != p1, got p0={p0}, p1={p1}")
        self.p0 = p0
        self.p1 = p1
        self.threshold = threshold
        self.w1 = math.log(p1 / p0)
        self.w0 = math.log((1.0 - p1) / (1.0 - p0))
        self._reset()

    def _reset(self) -> None:
        super()._reset()
        self.statistic = 0.0
        self.n = 0

    def update(self, x: bool) -> None:
        if self._drift_detected:
            self._reset()
        self.n += 1
        s = self.statistic + (self.w1 if x else self.w0)
        self.statistic = s if s > 0.0 else 0.0
        self._drift_detected = self.statistic > self.threshold

    def update_many(self, values: ArrayLike) -> np.ndarray:
        """``update`` with each of ``values`` (truth values) in turn, vectorised: the alarms' indices.

        The state afterwards is the one ``update`` would leave (up to rounding), so the two mix freely;
        ``drift_detected`` tells of the last value.

        >>> rng = np.random.default_rng(3)
        >>> stream = np.concatenate([rng.random(20_000) < 0.001, rng.random(5_000) < 0.005])
        >>> detector = BernoulliCUSUM(p0=0.001, p1=0.005, threshold=6.0)
        >>> alarms = detector.update_many(stream)
        >>> alarms.tolist()
        [21693, 22955, 24423]
        >>> from sluice.monitoring.cusum import update_each
        >>> update_each(BernoulliCUSUM(p0=0.001, p1=0.005, threshold=6.0), stream.tolist()).tolist()
        [21693, 22955, 24423]
        """
        x = np.asarray(values, dtype=bool)
        if x.ndim != 1:
            raise ValueError(f"update_many takes a 1-D array, got shape {x.shape}")
        if not x.size:
            return np.empty(0, dtype=np.intp)
        fresh = self._drift_detected
        hits, sums, self.n = lindley_run(
            np.where(x, self.w1, self.w0)[None, :],
            [0.0 if fresh else self.statistic],
            0 if fresh else self.n,
            self.threshold,
            dense=fresh and self.n <= DENSE,
        )
        self.statistic = sums[0]
        self._drift_detected = bool(hits) and hits[-1] == x.size - 1
        return np.asarray(hits, dtype=np.intp)
