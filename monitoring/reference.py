"""What a stream looked like before serving: from a model's reference profile, or from its first requests.

A ``NumericReference`` and a ``CategoricalReference`` summarise one signal (a feature, the prediction
score, latency) and can *replay* it: ``draw(rng, n)`` samples values that look like the reference, which
is how thresholds are calibrated. From a converter's profile (``sluice.converters.artifact.profile``) a
numeric feature is replayed from its histogram (uniform within a bin) and a score from its
quantiles; from the first N requests, by resampling those values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sluice.converters.artifact.profile import CategoricalFeature, NumericFeature, ValueSummary

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
#: A standard deviation below this (relative to the mean's size) is treated as a constant feature.
MIN_STD = 1e-9


@dataclass(frozen=True)
class NumericReference:
    """Mean, spread, quantiles and histogram of a numeric signal, and a way to replay it."""

    mean: float
    std: float
    quantiles: dict[str, float]
    edges: tuple[float, ...] = ()
    counts: tuple[int, ...] = ()
    values: np.ndarray | None = field(default=None, repr=False, compare=False)

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.values is not None and self.values.size:
            return np.asarray(rng.choice(self.values, n))
        if self.counts and sum(self.counts) > 0:
            edges = np.asarray(self.edges)
            p = np.asarray(self.counts, dtype=np.float64)
            bins = np.asarray(rng.choice(len(p), n, p=p / p.sum()))
            out: np.ndarray = edges[bins] + rng.random(n) * (edges[bins + 1] - edges[bins])
            # Spreading values uniformly inside bins shrinks the spread of discrete features (point masses
            # at bin edges): match the profile's mean and std, which the live z-scores are taken against.
            spread = float(out.std())
            if spread > 0:
                out = self.mean + (out - float(out.mean())) * (self.std / spread)
            return out
        points = sorted((float(q), v) for q, v in self.quantiles.items())
        return np.interp(rng.random(n), [p for p, _ in points], [v for _, v in points])

    def key(self) -> tuple[Any, ...]:
        """What the replay depends on (calibrations are cached by it)."""
        if self.values is not None:
            return ("values", self.values.size, float(self.values.sum()), float((self.values**2).sum()))
        return (
            "summary",
            self.mean,
            self.std,
            self.edges,
            self.counts,
            tuple(sorted(self.quantiles.items())),
        )

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "quantiles": self.quantiles}

    @classmethod
    def from_profile(cls, feature: NumericFeature) -> NumericReference | None:
        """A profiled feature's reference (None for a feature the sample had no values of)."""
        if feature.mean is None or feature.std is None:
            return None
        histogram = feature.histogram
        return cls(
            mean=feature.mean,
            std=max(feature.std, MIN_STD),
            quantiles=dict(feature.quantiles or {}),
            edges=() if histogram is None else histogram.edges,
            counts=() if histogram is None else histogram.counts,
        )

    @classmethod
    def from_value(cls, value: ValueSummary) -> NumericReference:
        """A regressor's predicted value, from its profile (no histogram: replayed from its quantiles)."""
        return cls(value.mean, max(value.std, MIN_STD), dict(value.quantiles))

    @classmethod
    def from_quantiles(cls, quantiles: dict[str, float]) -> NumericReference:
        """A signal known only by its quantiles (a model's score): moments from the interpolated law."""
        ref = cls(0.0, 1.0, {str(k): float(v) for k, v in quantiles.items()})
        sample = ref.draw(np.random.default_rng(0), 20_000)
        return cls(float(sample.mean()), max(float(sample.std()), MIN_STD), ref.quantiles)

    @classmethod
    def from_values(cls, values: np.ndarray) -> NumericReference | None:
        v = np.asarray(values, dtype=np.float64)
        v = v[np.isfinite(v)]
        if not v.size:
            return None
        counts, edges = np.histogram(v, bins=10)
        return cls(
            mean=float(v.mean()),
            std=max(float(v.std()), MIN_STD),
            quantiles={str(q): float(x) for q, x in zip(QUANTILES, np.quantile(v, QUANTILES), strict=True)},
            edges=tuple(float(e) for e in edges),
            counts=tuple(int(c) for c in counts),
            values=v,
        )


@dataclass(frozen=True)
class CategoricalReference:
    """Shares of the known categories; everything else counts as unseen."""

    shares: dict[str, float]
    other: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"shares": self.shares, "other": self.other}

    @classmethod
    def from_profile(cls, feature: CategoricalFeature) -> CategoricalReference:
        return cls(dict(feature.categories), feature.other)

    @classmethod
    def from_values(cls, values: np.ndarray) -> CategoricalReference:
        names, counts = np.unique(np.asarray(values).astype(str), return_counts=True)
        n = max(int(counts.sum()), 1)
        return cls({str(k): float(c) / n for k, c in zip(names, counts, strict=True)})
