"""A two-sided CUSUM on a standardised stream, written as a River drift detector.

River's ``PageHinkley`` compares each value with the stream's own running mean, so drift that is present
from the first request is never seen. Drift monitoring asks another question: does the stream still look
like the *reference*? This CUSUM tests the mean against a fixed reference mean ``mu0`` (0 for a stream
already z-scored against the reference), with the classic recursions

    S+_t = max(0, S+_{t-1} + (x_t - mu0) - k)        S-_t = max(0, S-_{t-1} - (x_t - mu0) - k)

and an alarm when either sum exceeds ``threshold``. ``k`` is half the shift it is tuned for (in the
stream's units); ``threshold`` is set by calibration (see ``monitoring.calibration``), not by hand.
"""

from __future__ import annotations

from river import base


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
    >>> from monitoring.cusum import CUSUM

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
