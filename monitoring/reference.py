"""What a stream looked like before serving: from a model's reference profile, or from its first requests.

A ``NumericReference`` and a ``CategoricalReference`` summarise one signal (a feature, the prediction
score, latency) and can *replay* it: ``draw(rng, n)`` samples values that look like the reference, which
is how thresholds are calibrated. From a converter's profile (``sluice.converters.artifact.profile``) a
numeric feature or a score is replayed from its histogram (its atoms as points, the rest uniform within a
bin), rescaled to the profile's exact mean and standard deviation; from the first N requests, by
resampling those values. Moments are always the stored ones, never derived from quantiles (a bimodal
score's mean interpolated from seven quantiles was 0.150 against a true 0.0716: endless alarms).

``rows`` is how many rows the reference was estimated from: the fewer, the less its mean and spread can
be trusted, and the wider the detectors' allowances (``sluice.monitoring.streams``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sluice.converters.artifact.profile import CategoricalFeature, Histogram, NumericFeature, ValueSummary

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
    atoms: tuple[float, ...] = ()
    atom_counts: tuple[int, ...] = ()
    #: Rows the mean and spread were estimated from (0: unknown, taken as exact).
    rows: int = 0

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.values is not None and self.values.size:
            return np.asarray(rng.choice(self.values, n))
        if self.counts and sum(self.counts) > 0:
            edges = np.asarray(self.edges)
            # Atoms are counted in their bins too: the bins keep what the atoms do not hold.
            inside = np.zeros(len(self.counts))
            if self.atoms:
                at = np.clip(np.searchsorted(edges, self.atoms, side="right") - 1, 0, len(self.counts) - 1)
                np.add.at(inside, at, self.atom_counts)
            p = np.concatenate([np.maximum(np.asarray(self.counts) - inside, 0.0), self.atom_counts])
            pick = np.asarray(rng.choice(len(p), n, p=p / p.sum()))
            bins = np.minimum(pick, len(self.counts) - 1)
            out: np.ndarray = edges[bins] + rng.random(n) * (edges[bins + 1] - edges[bins])
            if self.atoms:
                point = pick >= len(self.counts)
                out[point] = np.asarray(self.atoms)[pick[point] - len(self.counts)]
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
            return (
                "values",
                self.values.size,
                float(self.values.sum()),
                float((self.values**2).sum()),
                self.rows,
            )
        return (
            "summary",
            self.mean,
            self.std,
            self.edges,
            self.counts,
            self.atoms,
            self.atom_counts,
            self.rows,
            tuple(sorted(self.quantiles.items())),
        )

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "quantiles": self.quantiles}

    @classmethod
    def of(
        cls,
        mean: float,
        std: float,
        quantiles: Mapping[str, float] | None,
        histogram: Histogram | None,
        rows: int = 0,
    ) -> NumericReference:
        h = histogram
        return cls(
            mean=mean,
            std=max(std, MIN_STD),
            quantiles=dict(quantiles or {}),
            edges=() if h is None else h.edges,
            counts=() if h is None else h.counts,
            atoms=() if h is None else h.atoms,
            atom_counts=() if h is None else h.atom_counts,
            rows=rows,
        )

    @classmethod
    def from_profile(cls, feature: NumericFeature, rows: int = 0) -> NumericReference | None:
        """A profiled feature's reference (None for a feature the sample had no values of); ``rows``: the
        sample's rows (its non-missing ones are what the statistics rest on)."""
        if feature.mean is None or feature.std is None:
            return None
        present = round(rows * (1.0 - feature.missing))
        return cls.of(feature.mean, feature.std, feature.quantiles, feature.histogram, present)

    @classmethod
    def from_summary(cls, value: ValueSummary, rows: int = 0) -> NumericReference:
        """A predicted value or score from its profile: its exact moments and histogram."""
        return cls.of(value.mean, value.std, value.quantiles, value.histogram, rows)

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
            rows=int(v.size),
        )


@dataclass(frozen=True)
class CategoricalReference:
    """Shares of the known categories; everything else counts as unseen."""

    shares: dict[str, float]
    other: float = 0.0
    #: Rows the shares were estimated from (0: unknown, taken as exact).
    rows: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"shares": self.shares, "other": self.other}

    @classmethod
    def from_profile(cls, feature: CategoricalFeature, rows: int = 0) -> CategoricalReference:
        return cls(dict(feature.categories), feature.other, rows)

    @classmethod
    def from_values(cls, values: np.ndarray) -> CategoricalReference:
        names, counts = np.unique(np.asarray(values).astype(str), return_counts=True)
        n = max(int(counts.sum()), 1)
        return cls({str(k): float(c) / n for k, c in zip(names, counts, strict=True)}, 0.0, n)
