"""Detectors that learn their baseline from the live stream: latency level, latency tail, and rates.

Latency is not stationary the way features are: it follows load, the machine's other tenants and the
scheduler. A reference taken from the first requests is not the service's normal an hour later (on a
shared 2-core machine PageHinkley and a tail CUSUM against such a reference raised 100-260 false alarms
per 100k). So these detectors track the live baseline, slowly, and alarm on a change that is fast
compared with it and large compared with the noise they have measured:

- ``LatencyShift`` watches the median of each block of ``block`` requests' log latency. A scheduler
  hiccup moves a few requests, not a block's median; a heavier version or a saturated core moves them
  all. The baseline is an exponentially weighted mean of block medians (about ``memory`` blocks), the noise
  scale an exponentially weighted mean absolute deviation of them (including the slow wander of a shared
  machine); a CUSUM of the medians' z-scores (allowance ``k``) alarms on a rise.
- ``TailShift`` watches which blocks hold a request slower than ``margin`` times the baseline's p99 (from
  a ring of recent latencies, refreshed every few blocks). Counts are capped per block (``cap``) and
  their log-likelihood ratio is divided by the measured over-dispersion, so a stall that slows a run of
  requests at once is not read as a heavier tail. On a shared 2-core machine's real trace, a cut at the
  p99 itself and uncapped counts raised 4 false alarms per 100k; 4 x p99 and a cap of 1, 0.7.
- ``LiveRate`` is a Bernoulli CUSUM whose base rate is the stream's own, tracked over about ``memory``
  values and calibrated ``RATE_MARGIN_SE`` standard errors above the estimate (errors, client errors).

All three learn for ``warmup`` values before they can alarm, keep learning after an alarm (a lasting
change becomes the new normal and its incident resolves), and have an ``update_many`` equal to
``update`` value by value.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike
from river import base

from sluice.monitoring.bernoulli import BernoulliCUSUM
from sluice.monitoring.calibration import bernoulli_threshold

#: The rate estimate is rounded to this many steps per factor of e before calibrating (cache hits).
_RATE_GRID = 20.0


class _Blocks(base.DriftDetector):
    """Shared plumbing: values buffered into blocks, each block handed to ``_block``."""

    def __init__(self, block: int) -> None:
        super().__init__()
        self.block = block
        self._pending: list[float] = []

    def _block(self, values: np.ndarray) -> bool:
        raise NotImplementedError

    def update(self, x: float) -> None:
        self._drift_detected = False
        self._pending.append(float(x))
        if len(self._pending) == self.block:
            values, self._pending = np.asarray(self._pending), []
            self._drift_detected = self._block(values)

    def update_many(self, values: ArrayLike) -> np.ndarray:
        """``update`` with each value in turn, whole blocks at once; the indices of the alarms."""
        x = np.asarray(values, dtype=np.float64).ravel()
        hits: list[int] = []
        self._drift_detected = False
        first = min(self.block - len(self._pending), x.size)
        self._pending += x[:first].tolist()
        if len(self._pending) < self.block:
            return np.empty(0, dtype=np.intp)
        blocks = [np.asarray(self._pending)]
        rest = x[first:]
        whole = rest.size // self.block * self.block
        blocks += list(rest[:whole].reshape(-1, self.block))
        self._pending = rest[whole:].tolist()
        for j, b in enumerate(blocks):
            alarm = self._block(b)
            if alarm:
                hits.append(first - 1 + j * self.block)
            self._drift_detected = alarm and not self._pending and j == len(blocks) - 1
        return np.asarray(hits, dtype=np.intp)


class LatencyShift(_Blocks):
    """A rise of the median log latency against its own live baseline.

    Parameters
    ----------
    block
        Requests per block (its median is one sample).
    k, threshold
        CUSUM allowance and decision interval, in units of the block medians' noise scale.
    memory
        Blocks the baseline and the noise scale average over (exponential weights).
    warmup
        Blocks learnt before the first alarm is possible.
    min_scale
        Floor of the noise scale in log units (0.02: a 2 % wobble of the median), so a very quiet
        stream does not alarm on a few per cent.
    clip
        Largest z-score one block adds: a stall that slows two or three blocks' requests tenfold adds
        at most ``3 * (clip - k)``, below ``threshold``; a lasting regression adds it block after block.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> log_latency = np.log(0.005) + 0.25 * rng.normal(size=20_000)
    >>> log_latency[15_000:] += np.log(3.0)  # a version three times slower
    >>> detector = LatencyShift()
    >>> alarms = detector.update_many(log_latency)
    >>> int(alarms[0]) - 15_000 < 100, bool((alarms < 15_000).any())
    (True, False)

    The same alarms value by value:

    >>> step = LatencyShift()
    >>> [i for i, v in enumerate(log_latency.tolist()) if (step.update(v), step.drift_detected)[1]][:3] == (
    ...     alarms[:3].tolist())
    True
    """

    def __init__(
        self,
        block: int = 16,
        k: float = 1.0,
        threshold: float = 16.0,
        memory: int = 256,
        warmup: int = 32,
        min_scale: float = 0.02,
        clip: float = 4.0,
    ) -> None:
        super().__init__(block)
        self.k = k
        self.clip = clip
        self.threshold = threshold
        self.memory = memory
        self.warmup = warmup
        self.min_scale = min_scale
        self.blocks = 0
        self.baseline = 0.0
        self.scale = 0.0
        self.statistic = 0.0
        self._learnt: list[float] = []

    def _block(self, values: np.ndarray) -> bool:
        m = float(np.median(values))
        self.blocks += 1
        if self.blocks <= self.warmup:
            self._learnt.append(m)
            if self.blocks == self.warmup:
                learnt = np.asarray(self._learnt)
                self.baseline = float(np.median(learnt))
                self.scale = float(np.mean(np.abs(learnt - self.baseline)))
                self._learnt = []
            return False
        scale = max(self.scale * 1.25, self.min_scale)  # mean absolute deviation -> standard deviation
        z = (m - self.baseline) / scale
        s = self.statistic + min(z, self.clip) - self.k
        alarm = s > self.threshold
        self.statistic = 0.0 if alarm or s < 0.0 else s
        a = 1.0 / self.memory
        deviation = min(abs(m - self.baseline), 4.0 * scale)  # one wild block cannot inflate the scale
        self.scale += a * (deviation - self.scale)
        self.baseline += a * (float(np.clip(m - self.baseline, -4.0 * scale, 4.0 * scale)))
        return alarm


class TailShift(_Blocks):
    """A rise of the share of requests above the live p99, robust to bursts of slow requests.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(2)
    >>> latency = 0.005 * np.exp(0.25 * rng.normal(size=30_000))
    >>> tail = rng.random(30_000) < 0.02
    >>> latency[20_000:][tail[20_000:]] += 0.2  # 2 % of requests 200 ms slower
    >>> alarms = TailShift().update_many(latency)
    >>> 20_000 <= int(alarms[0]) < 21_000, len(alarms[alarms < 20_000])
    (True, 0)
    """

    def __init__(
        self,
        block: int = 16,
        lift: float = 3.0,
        target_arl: float = 200_000.0,
        ring: int = 4096,
        refresh: int = 32,
        warmup: int = 64,
        cap: int = 1,
        memory: int = 512,
        margin: float = 4.0,
    ) -> None:
        super().__init__(block)
        self.lift = lift
        self.margin = margin
        self.target_arl = target_arl
        self.refresh = refresh
        self.warmup = warmup
        self.cap = cap
        self.memory = memory
        self.blocks = 0
        self.p99 = self.cut = math.inf
        self.rate = 0.01
        self.dispersion = 1.0
        self.statistic = 0.0
        self.threshold = bernoulli_threshold(0.01, 0.01 * lift, target_arl)
        self._ring = np.zeros(ring)
        self._filled = self._written = 0

    def _block(self, values: np.ndarray) -> bool:
        self.blocks += 1
        if self.statistic <= 0.5 * self.threshold:  # a rise under way stays out of the ring
            n = self._ring.size
            at = (self._written * self.block) % n
            self._ring[at : at + self.block] = values[: n - at]
            self._filled = min(self._filled + self.block, n)
            self._written += 1
        if self.blocks % self.refresh == 0 or self.blocks == self.warmup:
            self.p99 = float(np.quantile(self._ring[: self._filled], 0.99))
            self.cut = self.margin * self.p99
        if self.blocks < self.warmup:
            return False
        if self.blocks == self.warmup:
            self.rate = float(np.mean(self._ring[: self._filled] > self.cut))
            return False
        c = int(np.count_nonzero(values > self.cut))
        se = math.sqrt(self.rate / (self.memory * self.block))
        p0 = _on_grid(min(max(self.rate + RATE_MARGIN_SE * se, 0.001), 0.5))
        p1 = _on_grid(min(max(self.lift * p0, p0 + TAIL_RISE), 0.99))
        self.threshold = bernoulli_threshold(p0, p1, self.target_arl)
        used = min(c, self.cap)
        llr = used * math.log(p1 / p0) + (self.block - used) * math.log((1 - p1) / (1 - p0))
        s = self.statistic + llr / max(self.dispersion, 1.0)
        alarm = s > self.threshold
        self.statistic = 0.0 if alarm or s < 0.0 else s
        if self.statistic > 0.5 * self.threshold:
            return alarm  # a rise under way is not folded into the baseline it is judged against
        a = 1.0 / self.memory
        # Over-dispersion of the capped counts against the rate calibrated for (the counts the CUSUM sees).
        expected = min(self.block * p0, self.cap)
        binomial = self.block * p0 * (1.0 - p0)
        self.dispersion += a * ((used - expected) ** 2 / binomial - self.dispersion)
        self.rate += a * (c / self.block - self.rate)
        return alarm


class LiveRate(base.BinaryDriftDetector):
    """A Bernoulli CUSUM for a rise of a rate above the stream's own, tracked live.

    ``p1`` is ``lift(p0)``; the base rate ``p0`` is the exponentially weighted share of ones over about
    ``memory`` values (at least ``floor``), re-estimated every ``every`` values.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(3)
    >>> errors = rng.random(40_000) < 0.002
    >>> errors[30_000:30_500] = rng.random(500) < 0.05  # a burst
    >>> detector = LiveRate(lambda p: 5 * p)
    >>> alarms = detector.update_many(errors)
    >>> 30_000 <= int(alarms[0]) < 30_500, bool((alarms < 30_000).any())
    (True, False)
    """

    def __init__(
        self,
        lift: Callable[[float], float],
        target_arl: float = 200_000.0,
        memory: int = 20_000,
        warmup: int = 2000,
        every: int = 256,
        floor: float = 0.001,
    ) -> None:
        super().__init__()
        self.lift = lift
        self.target_arl = target_arl
        self.memory = memory
        self.warmup = warmup
        self.every = every
        self.floor = floor
        self.n = 0
        self.rate = 0.0
        self._total = 0
        self._ones = 0  # ones since the last estimate
        self._since = 0
        self.cusum: BernoulliCUSUM | None = None

    @property
    def threshold(self) -> float:
        return math.inf if self.cusum is None else self.cusum.threshold

    @property
    def statistic(self) -> float:
        return 0.0 if self.cusum is None else self.cusum.statistic

    def update(self, x: bool) -> None:
        self.update_many(np.asarray([bool(x)]))

    def update_many(self, values: ArrayLike) -> np.ndarray:
        """``update`` with each value in turn, a segment between re-estimations at a time."""
        x = np.asarray(values, dtype=bool).ravel()
        hits: list[np.ndarray] = []
        pos = 0
        self._drift_detected = False
        while pos < x.size:
            stop = min(pos + self.every - self._since, x.size)
            seg = x[pos:stop]
            if self.cusum is not None:
                found = self.cusum.update_many(seg)
                if found.size:
                    hits.append(found + pos)
                self._drift_detected = self.cusum.drift_detected
            else:
                self._drift_detected = False
            self._ones += int(np.count_nonzero(seg))
            self.n += seg.size
            self._since += seg.size
            pos = stop
            if self._since == self.every:
                self._since = 0
                self._estimate()
        return np.concatenate(hits) if hits else np.empty(0, dtype=np.intp)

    def _estimate(self) -> None:
        """Fold the last ``every`` values into the rate; re-arm the CUSUM where the rate moved."""
        ones, self._ones = self._ones, 0
        if self.cusum is not None and self.cusum.statistic > 0.5 * self.cusum.threshold:
            return  # a rise under way is not folded into the baseline it is judged against
        if self.n <= self.memory:
            self._total += ones
            self.rate = self._total / self.n
        else:
            self.rate += self.every / self.memory * (ones / self.every - self.rate)
        if self.n < self.warmup:
            return
        seen = min(self.n, self.memory)
        se = math.sqrt(max(self.rate, 1.0 / seen) * (1.0 - self.rate) / seen)
        p0 = _on_grid(min(max(self.rate + RATE_MARGIN_SE * se, self.floor), 0.5))
        p1 = min(max(self.lift(p0), p0 * 1.01), 0.999)
        if self.cusum is None or self.cusum.p0 != p0:
            old = self.cusum
            self.cusum = BernoulliCUSUM(p0, p1, bernoulli_threshold(p0, p1, self.target_arl))
            if old is not None:  # the sum so far carries over; so does an alarm on the last value
                self.cusum.statistic = old.statistic
                self.cusum._drift_detected = old.drift_detected


#: Standard errors a live base rate is raised by before calibrating (it is re-estimated all the time, so
#: a low estimate does not last; a reference's is raised by more, ``streams.RATE_MARGIN_SE``).
RATE_MARGIN_SE = 0.5
#: The tail rate watched for is at least this far above the baseline's (a baseline near 0 stays near 0).
TAIL_RISE = 0.01


def _on_grid(p: float) -> float:
    return round(math.exp(round(math.log(p) * _RATE_GRID) / _RATE_GRID), 8)
