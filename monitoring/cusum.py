"""A two-sided CUSUM on a standardised stream, written as a River drift detector.

River's ``PageHinkley`` compares each value with the stream's own running mean, so drift that is present
from the first request is never seen. Drift monitoring asks another question: does the stream still look
like the *reference*? This CUSUM tests the mean against a fixed reference mean ``mu0`` (0 for a stream
already z-scored against the reference), with the classic recursions

    S+_t = max(0, S+_{t-1} + (x_t - mu0) - k)        S-_t = max(0, S-_{t-1} - (x_t - mu0) - k)

and an alarm when either sum exceeds ``threshold``. ``k`` is half the shift it is tuned for (in the
stream's units); ``threshold`` is set by calibration (see ``sluice.monitoring.calibration``), not by hand.

``update_many`` feeds a whole array in one call: the monitor's per-value Python loop over 60-odd streams
was most of its cost. It runs Lindley's recursion in closed form (``lindley_run``, shared with
``BernoulliCUSUM``), which adds the same increments in another order, so its sums equal the step-by-step
ones up to rounding: within 1e-12 on sums of order 10 (the evaluation's runs: 1.5e-13 at most). An alarm
can therefore differ only where a step-by-step sum lies within that rounding of ``threshold``, which a
continuous stream practically never does (every alarm of the evaluation is the same); a sum exactly equal
to ``threshold`` (no alarm) comes out exact where the increments are exact in binary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from river import base

from sluice.monitoring.calibration import Detector

#: Longest run of increments summed in one pass: keeps the cumulative sums, and their rounding, small.
BLOCK = 4096
#: The first pass after an alarm looks this far ahead, doubling while it finds none.
AFTER_ALARM = 64
#: Alarms at most this many values apart (a stream that has drifted) are followed value by value: a pass
#: costs about as much as a hundred steps, and finds one alarm.
DENSE = 128


def lindley_run(
    increments: np.ndarray, sums: list[float], since: int, threshold: float, dense: bool = False
) -> tuple[list[int], list[float], int]:
    """CUSUM sums ``S = max(0, S + increment)`` (one row per side), restarting from 0 after each alarm.

    ``sums`` are the sums before the first increment and ``since`` how many increments they have taken
    (zeros and 0 when the first increment restarts them; ``dense`` when that restart follows an alarm
    that came ``DENSE`` values or fewer after the one before). Returns the indices of the increments
    after which a sum exceeds ``threshold``, the sums after the last increment, and how many increments
    those have taken since their last restart.

    A pass is Lindley's recursion in closed form, ``S_t = C_t - min(-S_0, min_{s<=t} C_s)`` with ``C``
    the cumulative sum since the pass began, as in ``sluice.monitoring.calibration.cusum_alarms``. Dense
    alarms, and passes with a value that is not finite (a NaN sets a sum to 0, which the closed form cannot
    say), go value by value instead.

    >>> hits, sums, since = lindley_run(np.array([[1.0, 1.0, -5.0, 1.0, 1.0, 1.0]]), [0.0], 0, 1.5)
    >>> hits, sums, since
    ([1, 4], [1.0], 1)
    """
    n = increments.shape[1]
    hits: list[int] = []
    pos = 0
    size = BLOCK
    stepwise, stepwise_until = dense, 0
    values: list[list[float]] = []
    while pos < n:
        if stepwise:
            values = values or increments.tolist()
            pos, sums, since = _steps(values, pos, stepwise_until, sums, since, threshold, hits)
            stepwise, size = False, AFTER_ALARM
            continue
        stop = min(pos + size, n)
        c = np.add.accumulate(increments[:, pos:stop], axis=1)
        if not all(math.isfinite(v) for v in c[:, -1].tolist()):
            stepwise, stepwise_until = True, stop
            continue
        s = c - np.minimum.accumulate(np.minimum(c, -np.array(sums)[:, None]), axis=1)
        if s.max() <= threshold:
            sums, since, pos = s[:, -1].tolist(), since + stop - pos, stop
            size = min(2 * size, BLOCK)
            continue
        j = int((s > threshold).any(axis=0).argmax())
        hits.append(pos + j)
        since += j + 1
        if pos + j == n - 1:  # the alarm stays visible until the next update restarts the sums
            return hits, s[:, j].tolist(), since
        pos += j + 1
        stepwise, stepwise_until = since <= DENSE, 0
        sums, since = [0.0] * len(sums), 0
        size = AFTER_ALARM
    return hits, sums, since


def _steps(
    rows: list[list[float]],
    start: int,
    stop: int,
    sums: list[float],
    since: int,
    threshold: float,
    hits: list[int],
) -> tuple[int, list[float], int]:
    """``lindley_run`` value by value from ``start``: where it stopped, the sums then and ``since``.

    It goes to ``stop`` at least, and on while alarms (added to ``hits``) come at most ``2 * DENSE`` values
    after the last restart.
    """
    n = len(rows[0])
    quiet = max(stop, start + 2 * DENSE - since)  # where it hands back to the passes if no alarm comes
    if len(rows) == 1:
        row = rows[0]
        s = sums[0]
        for i in range(start, n):
            if i >= quiet:
                return i, [s], since
            s += row[i]
            if not s > 0.0:  # NaN included, as in ``update``
                s = 0.0
            since += 1
            if s > threshold:
                hits.append(i)
                if i == n - 1:
                    break
                s, since, quiet = 0.0, 0, max(stop, i + 1 + 2 * DENSE)
        return n, [s], since
    upper, lower = rows
    up, low = sums
    for i in range(start, n):
        if i >= quiet:
            return i, [up, low], since
        up += upper[i]
        low += lower[i]
        if not up > 0.0:
            up = 0.0
        if not low > 0.0:
            low = 0.0
        since += 1
        if up > threshold or low > threshold:
            hits.append(i)
            if i == n - 1:
                break
            up, low, since, quiet = 0.0, 0.0, 0, max(stop, i + 1 + 2 * DENSE)
    return n, [up, low], since


def update_each(detector: Detector, values: list[Any]) -> np.ndarray:
    """``detector.update`` value by value: the indices where it raised an alarm."""
    update = detector.update
    hits = []
    for i, x in enumerate(values):
        update(x)
        if detector.drift_detected:
            hits.append(i)
    return np.asarray(hits, dtype=np.intp)


class CUSUM(base.DriftDetector):
    """Page's cumulative sum test for a change of mean away from a known reference mean.

    Parameters
    ----------
    k
        Allowance: half the shift (in the stream's units) the test is tuned for.
    threshold
        Decision interval ``h``: an alarm when a cumulative sum exceeds it.
    mu0
        The reference mean.
    two_sided
        Watch decreases as well as increases.

    Examples
    --------
    >>> import random
    >>> from sluice.monitoring.cusum import CUSUM

    >>> rng = random.Random(7)
    >>> detector = CUSUM(k=0.25, threshold=12.0)
    >>> stream = [rng.gauss(0, 1) for _ in range(1000)] + [rng.gauss(1, 1) for _ in range(1000)]
    >>> for i, x in enumerate(stream):
    ...     detector.update(x)
    ...     if detector.drift_detected:
    ...         print(f"change detected at index {i}")
    ...         break
    change detected at index 1018

    After an alarm the next update starts from zero, as River's detectors do.

    >>> detector.update(0.0)
    >>> detector.statistic
    0.0
    """

    def __init__(self, k: float = 0.25, threshold: float = 12.0, mu0: float = 0.0, two_sided: bool = True):
        super().__init__()
        self.k = k
        self.threshold = threshold
        self.mu0 = mu0
        self.two_sided = two_sided
        self._reset()

    def _reset(self) -> None:
        super()._reset()
        self.upper = 0.0
        self.lower = 0.0
        self.n = 0

    @property
    def statistic(self) -> float:
        """The larger of the two cumulative sums (compare it with ``threshold``)."""
        return max(self.upper, self.lower)

    def update(self, x: int | float) -> None:
        if self._drift_detected:
            self._reset()
        d = x - self.mu0
        self.n += 1
        upper = self.upper + d - self.k
        self.upper = upper if upper > 0.0 else 0.0
        if self.two_sided:
            lower = self.lower - d - self.k
            self.lower = lower if lower > 0.0 else 0.0
        self._drift_detected = self.upper > self.threshold or self.lower > self.threshold

    def update_many(self, values: ArrayLike) -> np.ndarray:
        """``update`` with each of ``values`` in turn, vectorised; the indices where an alarm was raised.

        The state afterwards is the one ``update`` would leave (up to rounding, see the module's
        docstring), so the two mix freely; ``drift_detected`` tells of the last value.

        >>> rng = np.random.default_rng(7)
        >>> stream = np.concatenate([rng.normal(0, 1, 1000), rng.normal(1, 1, 1000)])
        >>> detector = CUSUM(k=0.25, threshold=12.0)
        >>> alarms = detector.update_many(stream)
        >>> alarms[:3].tolist()
        [1009, 1039, 1056]

        The same alarms as value by value:

        >>> step = CUSUM(k=0.25, threshold=12.0)
        >>> update_each(step, stream.tolist()).tolist() == alarms.tolist()
        True
        """
        x = np.asarray(values, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(f"update_many takes a 1-D array, got shape {x.shape}")
        if not x.size:
            return np.empty(0, dtype=np.intp)
        d = x - self.mu0
        if self.two_sided:
            increments = np.empty((2, x.size))
            np.subtract(d, self.k, out=increments[0])
            np.subtract(-self.k, d, out=increments[1])
            sums = [self.upper, self.lower]
        else:
            increments = (d - self.k)[None, :]
            sums = [self.upper]
        fresh = self._drift_detected
        hits, sums, self.n = lindley_run(
            increments,
            [0.0] * len(sums) if fresh else sums,
            0 if fresh else self.n,
            self.threshold,
            dense=fresh and self.n <= DENSE,
        )
        self.upper = sums[0]
        if self.two_sided:
            self.lower = sums[1]
        elif fresh:
            self.lower = 0.0
        self._drift_detected = bool(hits) and hits[-1] == x.size - 1
        return np.asarray(hits, dtype=np.intp)


def update_columns(detectors: Sequence[CUSUM], values: ArrayLike) -> list[np.ndarray]:
    """``update_many`` of each detector on its column of ``values`` (rows x detectors), in one pass.

    A monitor watches dozens of streams per row (two per numeric feature); ``update_many`` per stream
    pays numpy's fixed cost per call dozens of times per chunk, which for small chunks outweighs the
    work. Here every column goes through one vectorised Lindley pass; a column that raises an alarm or
    holds a non-finite value (rare without drift) is run again through its own ``update_many`` from its
    untouched state, so the results are exactly that method's. ``CUSUMBank`` keeps the detectors'
    parameters gathered between calls.

    >>> rng = np.random.default_rng(4)
    >>> x = rng.normal(0, 1, (2000, 3))
    >>> x[1000:, 1] += 1.0  # the middle stream shifts
    >>> bank = [CUSUM(k=0.25, threshold=16.0) for _ in range(3)]
    >>> [hits[:1].tolist() for hits in update_columns(bank, x)]
    [[], [1023], []]

    The same alarms and state as each detector's own ``update_many``:

    >>> alone = [CUSUM(k=0.25, threshold=16.0) for _ in range(3)]
    >>> [d.update_many(x[:, j])[:1].tolist() for j, d in enumerate(alone)]
    [[], [1023], []]
    >>> [round(d.statistic, 9) for d in bank] == [round(d.statistic, 9) for d in alone]
    True
    """
    return CUSUMBank(detectors).update(values)


class CUSUMBank:
    """CUSUM detectors updated together by ``update_columns``, their parameters gathered once."""

    def __init__(self, detectors: Sequence[CUSUM]) -> None:
        self.detectors = list(detectors)
        self.k = np.array([d.k for d in self.detectors], dtype=np.float64)
        self.h = np.array([d.threshold for d in self.detectors], dtype=np.float64)
        self.mu0 = np.array([d.mu0 for d in self.detectors], dtype=np.float64)
        self.two_sided = np.array([d.two_sided for d in self.detectors], dtype=bool)

    def update(self, values: ArrayLike) -> list[np.ndarray]:
        """``update_columns`` on these detectors: each one's alarm indices."""
        detectors = self.detectors
        x = np.asarray(values, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(detectors):
            raise ValueError(f"update_columns takes rows x {len(detectors)} values, got shape {x.shape}")
        n = x.shape[0]
        if not n or not detectors:
            return [np.empty(0, dtype=np.intp) for _ in detectors]
        fresh = np.array([d._drift_detected for d in detectors])
        two_sided = self.two_sided
        d = x - self.mu0
        start_up = np.where(fresh, 0.0, [det.upper for det in detectors])
        start_low = np.where(fresh | ~two_sided, 0.0, [det.lower for det in detectors])
        with np.errstate(invalid="ignore", over="ignore"):  # inf - inf: such columns are redone below
            c = np.add.accumulate(d - self.k, axis=0)
            upper = c - np.minimum.accumulate(np.minimum(c, -start_up), axis=0)
            c = np.add.accumulate(-d - self.k, axis=0)
            lower = c - np.minimum.accumulate(np.minimum(c, -start_low), axis=0)
            lower[:, ~two_sided] = 0.0
            redo = ((upper > self.h) | (lower > self.h)).any(axis=0) | ~np.isfinite(upper[-1] + lower[-1])
        out = []
        ups, lows, redo_list, fresh_list = (
            upper[-1].tolist(),
            lower[-1].tolist(),
            redo.tolist(),
            fresh.tolist(),
        )
        for j, det in enumerate(detectors):
            if redo_list[j]:
                out.append(det.update_many(x[:, j]))
                continue
            det.upper = ups[j]
            det.lower = lows[j]
            det.n = (0 if fresh_list[j] else det.n) + n
            det._drift_detected = False
            out.append(_NO_HITS)
        return out


_NO_HITS = np.empty(0, dtype=np.intp)
_NO_HITS.flags.writeable = False
