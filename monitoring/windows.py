"""Reference tests on tumbling windows: PSI and Jensen-Shannon distance of a window against the reference.

Per-request distribution tests (KS, KSWIN) cost 78-261 us per update (monitoring.md) and never run on
the hot path. Here the background task bins each window of rows on the reference histogram's edges (the
outer bins open-ended, so values outside the reference range count) and compares the shares when the
window closes. Both figures are reported, not alarmed on: the calibrated detectors raise the alarms.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sluice.monitoring.reference import NumericReference

#: Added to every bin share so empty bins do not make PSI infinite.
EPSILON = 1e-4


def psi(current: np.ndarray, reference: np.ndarray) -> float:
    """Population stability index of two share vectors (``> 0.25`` is a big shift by convention).

    >>> round(psi(np.array([0.5, 0.5]), np.array([0.5, 0.5])), 6)
    0.0
    """
    c = current + EPSILON
    r = reference + EPSILON
    c, r = c / c.sum(), r / r.sum()
    return float(np.sum((c - r) * np.log(c / r)))


def js_distance(current: np.ndarray, reference: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2: 0 for equal shares, 1 for disjoint ones).

    >>> js_distance(np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    1.0
    """
    c, r = current / max(current.sum(), 1e-12), reference / max(reference.sum(), 1e-12)
    m = 0.5 * (c + r)

    def kl(p: np.ndarray) -> float:
        mask = p > 0
        return float(np.sum(p[mask] * np.log2(p[mask] / m[mask])))

    return math.sqrt(max(0.5 * kl(c) + 0.5 * kl(r), 0.0))


class Window:
    """A tumbling window of ``size`` values of one signal, compared with its reference when it closes.

    ``bins`` are the reference's shares on ``edges`` (inner edges only: the first and last bins are
    open); categorical signals pass a ``labels`` list instead and ``add`` takes bin indices.
    """

    def __init__(self, edges: np.ndarray, reference_shares: np.ndarray, size: int) -> None:
        self.edges = edges
        self.reference = reference_shares / max(reference_shares.sum(), 1e-12)
        self.size = size
        self.windows = 0
        self._closed: tuple[np.ndarray, int, float, float, bool] | None = None
        self._last: dict[str, Any] | None = None
        self._clear()

    @classmethod
    def numeric(cls, ref: NumericReference, size: int) -> Window:
        if ref.counts:
            inner = np.asarray(ref.edges[1:-1], dtype=np.float64)
            shares = np.asarray(ref.counts, dtype=np.float64)
        else:  # quantiles only: the bins between them hold known shares
            points = sorted((float(q), v) for q, v in ref.quantiles.items())
            inner = np.asarray([v for _, v in points])
            probs = [p for p, _ in points]
            shares = np.diff(np.asarray([0.0, *probs, 1.0]))
        return cls(inner, shares, size)

    def _clear(self) -> None:
        self._counts = np.zeros(len(self.reference), dtype=np.float64)
        self._n = 0
        self._sum = 0.0
        self._sumsq = 0.0

    def add_values(self, values: np.ndarray) -> None:
        """Add raw values (numeric signals)."""
        self.add_bins(np.searchsorted(self.edges, values, side="right"), values)

    def add_bins(self, bins: np.ndarray, values: np.ndarray | None = None) -> None:
        start = 0
        while start < len(bins):
            take = min(self.size - self._n, len(bins) - start)
            part = bins[start : start + take]
            self._counts += np.bincount(part, minlength=len(self.reference))[: len(self.reference)]
            if values is not None:
                v = values[start : start + take]
                self._sum += float(v.sum())
                self._sumsq += float((v * v).sum())
            self._n += take
            start += take
            if self._n >= self.size:
                self._close(values is not None)

    def _close(self, numeric: bool) -> None:
        # Only the counts are kept: the figures are computed when someone reads them (``last``), so the
        # monitor does not pay ~30 numpy calls per feature each time a thousand rows close every window.
        self._closed = (self._counts, self._n, self._sum, self._sumsq, numeric)
        self._last = None
        self.windows += 1
        self._clear()

    @property
    def last(self) -> dict[str, Any] | None:
        """PSI, Jensen-Shannon and summary of the last closed window (None before the first)."""
        if self._last is None and self._closed is not None:
            counts, n, total, squares, numeric = self._closed
            shares = counts / max(n, 1)
            last: dict[str, Any] = {
                "rows": n,
                "psi": psi(shares, self.reference),
                "js": js_distance(shares, self.reference),
            }
            if numeric:
                mean = total / n
                last.update(mean=mean, std=math.sqrt(max(squares / n - mean * mean, 0.0)))
            else:
                last["shares"] = [float(s) for s in shares]
            self._last = last
        return self._last

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "closed": self.windows, "filling": self._n, "last": self.last}
