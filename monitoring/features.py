"""One feature under watch: its reference, its detectors (one named stream per derived signal), its window.

A feature is *armed* once it has a reference (from the profile, or from the first requests): its
detectors are built then, calibrated to the version's per-detector run length. A numeric feature's
detectors are its ``NumericDetectors`` (mean and variance of the z-score, and the missing-value share
when the version accepts NaN); a categorical feature's are its ``CategoricalDetectors`` (the share of
each of its most frequent categories, and of unseen ones). Each kind says how many detectors it builds
(``planned``) before its reference is known, which is what the version's false-alarm budget is split over.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from itertools import repeat

import numpy as np

from sluice.monitoring.layout import FeatureSource, WatchOptions
from sluice.monitoring.reference import MIN_STD, CategoricalReference, NumericReference
from sluice.monitoring.streams import (
    MISSING_LIFT,
    UNSEEN_LIFT,
    UNSEEN_P1,
    Alarm,
    Stream,
    mean_stream,
    rate_stream,
    reference_rate,
    share_p1,
    squared,
    standardize,
    variance_stream,
)
from sluice.monitoring.windows import Window

#: Categories of one feature watched one by one (the most frequent); the rest only through "unseen".
MAX_TRACKED_CATEGORIES = 10


@dataclass(eq=False)
class NumericDetectors:
    """A numeric feature's detectors: the z-score's mean and variance, and its NaN share if watched."""

    mean: Stream
    variance: Stream
    missing: Stream | None = None

    @classmethod
    def planned(cls, options: WatchOptions) -> int:
        """How many detectors ``build`` makes: one per field, ``missing`` only where NaN is watched."""
        return len(fields(cls)) - (0 if options.watch_missing else 1)

    @classmethod
    def build(
        cls, name: str, ref: NumericReference, missing: float, arl: float, options: WatchOptions
    ) -> NumericDetectors:
        return cls(
            mean_stream("drift", name, ref, arl),
            variance_stream(name, ref, arl),
            # The share of NaN rows, watched for a rise like an unseen category's.
            _missing_stream(name, reference_rate(missing, ref.rows), arl) if options.watch_missing else None,
        )

    def streams(self) -> list[Stream]:
        both = [self.mean, self.variance]
        return both if self.missing is None else [*both, self.missing]


def _missing_stream(name: str, missing: float, arl: float) -> Stream:
    return rate_stream("drift", name, "missing", missing, max(UNSEEN_P1, MISSING_LIFT * missing), arl)


@dataclass(eq=False)
class CategoricalDetectors:
    """A categorical feature's detectors: each tracked category's share, and the unseen categories'."""

    #: The tracked categories, most frequent first; ``shares[j]`` watches ``categories[j]``.
    categories: list[str]
    shares: list[Stream]
    unseen: Stream
    #: Each known category's bin: its index in ``categories``, or ``len(categories)`` for the others.
    bins: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def planned(known: int) -> int:
        """For a feature whose reference lists ``known`` categories (0: not known yet)."""
        return min(known or MAX_TRACKED_CATEGORIES, MAX_TRACKED_CATEGORIES) + 1

    @classmethod
    def build(cls, name: str, ref: CategoricalReference, arl: float) -> CategoricalDetectors:
        ranked = sorted(ref.shares.items(), key=lambda kv: -kv[1])[:MAX_TRACKED_CATEGORIES]
        categories = [c for c, _ in ranked]
        unseen = reference_rate(max(ref.other, 0.0), ref.rows)
        p0s = [reference_rate(p, ref.rows) for _, p in ranked]
        return cls(
            categories,
            [
                rate_stream("drift", name, "share", p, share_p1(p), arl, detail=c)
                for (c, _), p in zip(ranked, p0s, strict=True)
            ],
            rate_stream("drift", name, "unseen", unseen, max(UNSEEN_P1, UNSEEN_LIFT * unseen), arl),
            {c: len(ranked) for c in ref.shares} | {c: j for j, c in enumerate(categories)},
        )

    def streams(self) -> list[Stream]:
        return [*self.shares, self.unseen]


@dataclass(eq=False)
class FeatureWatch:
    """One feature of a version: where its values are, and once armed its reference and detectors."""

    source: FeatureSource
    reference: NumericReference | CategoricalReference | None = None
    reference_from: str = "first_requests"
    detectors: NumericDetectors | CategoricalDetectors | None = None
    window: Window | None = None

    def streams(self) -> list[Stream]:
        return [] if self.detectors is None else self.detectors.streams()

    def arm(
        self,
        ref: NumericReference | CategoricalReference,
        source: str,
        arl: float,
        options: WatchOptions,
        *,
        missing: float = 0.0,
    ) -> None:
        """Take ``ref`` (from ``source``: profile or first_requests) and build the detectors on it."""
        self.reference, self.reference_from = ref, source
        name = self.source.name
        if isinstance(ref, NumericReference):
            if ref.std <= MIN_STD:
                # Constant in the reference (digits' border pixels): a z-score has no scale, and the
                # first other value would alarm for ever. Not watched; the snapshot shows no detectors.
                self.detectors, self.window = None, None
                return
            self.detectors = NumericDetectors.build(name, ref, missing, arl, options)
            self.window = Window.numeric(ref, options.window_rows)
            return
        detectors = CategoricalDetectors.build(name, ref, arl)
        self.detectors = detectors
        tracked = [ref.shares[c] for c in detectors.categories]
        known = np.asarray([*tracked, max(1.0 - sum(tracked), 0.0)])
        self.window = Window(np.empty(0), known, options.window_rows)

    def values(self, columns: dict[str, np.ndarray], rows: int) -> np.ndarray:
        """This feature's values in a chunk's joined inputs (``rows`` of them)."""
        src = self.source
        data = columns[src.input]
        return data[:, src.column] if src.column is not None else data.reshape(rows, -1)[:, 0]

    def feed(self, values: np.ndarray, times: np.ndarray) -> list[Alarm]:
        """Update the armed detectors and window with one chunk's ``values``: the alarms raised."""
        ref, detectors = self.reference, self.detectors
        alarms: list[Alarm] = []
        if isinstance(ref, NumericReference) and isinstance(detectors, NumericDetectors):
            x = values.astype(np.float64, copy=False)
            ok = np.isfinite(x)
            if not ok.all():
                x, times = x[ok], times[ok]
            z = standardize(x, ref)
            alarms += detectors.mean.feed(z, times)
            alarms += detectors.variance.feed(squared(z), times)
            if self.window is not None:
                self.window.add_values(x)
        elif isinstance(detectors, CategoricalDetectors):
            text = as_text(values).tolist()
            bins = np.fromiter(map(detectors.bins.get, text, repeat(-1)), np.int64, len(text))
            unseen = bins < 0
            bins[unseen] = len(detectors.categories)
            for j, stream in enumerate(detectors.shares):
                alarms += stream.feed(bins == j, times)
            alarms += detectors.unseen.feed(unseen, times)
            if self.window is not None:
                self.window.add_bins(bins)
        return alarms

    def feed_missing(self, columns: dict[str, np.ndarray], times: np.ndarray) -> list[Alarm]:
        """Update the missing-value (NaN) detector, where there is one, with a chunk's joined inputs."""
        detectors = self.detectors
        if not isinstance(detectors, NumericDetectors) or detectors.missing is None:
            return []
        values = self.values(columns, len(times)).astype(np.float64, copy=False)
        return detectors.missing.feed(np.isnan(values), times)


def as_text(values: np.ndarray) -> np.ndarray:
    """Values as strings (bytes decoded), flattened: how categories and class labels are compared."""
    if values.dtype.kind in "SO":
        return np.array(
            [v.decode() if isinstance(v, bytes) else str(v) for v in values.ravel()], dtype=object
        )
    return values.ravel().astype(str)
