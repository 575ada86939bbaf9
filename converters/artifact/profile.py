"""The reference profile: the typed form of a manifest's ``profile`` object, read and written unchanged.

A converter builds a ``Profile`` from the sample it converted with (``sluice.converters._profile``); the
manifest carries it; monitoring replays it to calibrate its detectors. The JSON form, as written since
format 1::

    {
      "rows": 569,
      "features": {
        "<numeric feature>": {"type": "numeric", "mean": m, "std": s, "min": lo, "max": hi,
                              "quantiles": {"0.01": q, ...}, "histogram": {"edges": [...], "counts": [...],
                              "atoms": {"values": [...], "counts": [...]}}, "missing": 0.0},
        "<categorical feature>": {"type": "categorical", "categories": {"month": 0.55, ...},
                                  "other": 0.0, "distinct": 3, "missing": 0.0}
      },
      "outputs": {"class_shares": {...}, "score": "positive_class_probability", "score_quantiles": {...},
                  "score_summary": {"mean": m, "std": s, "quantiles": {...}, "histogram": {...}}}
                 | {"value": {"mean": m, "std": s, "quantiles": {...}, "histogram": {...}} | null}
    }

A histogram's ``atoms`` (optional: older profiles have none) are the values that hold a point mass
of the sample (a score of exactly 0, a binary feature) and how many rows hold each; they are counted in
the bins too, so the bins alone are the plain histogram. ``score_summary`` (optional as well) holds the
score's exact mean and standard deviation: monitors never derive moments from the quantiles. ``calibration``
(optional) is the monitor's, stored at conversion: an object only ``sluice.monitoring.stored`` reads.

``to_json`` writes every key in that order (a numeric feature without values has ``null`` statistics);
``from_json`` also reads hand-written profiles that leave optional keys out (a feature's ``type``
defaults to numeric, ``missing`` to 0). Anything else malformed raises ``ModelLoadError`` naming the key.

>>> body = {"rows": 2, "features": {"a": {"type": "categorical", "categories": {"x": 1.0},
...         "other": 0.0, "distinct": 1, "missing": 0.0}}, "outputs": {"value": None}}
>>> Profile.from_json(body).to_json() == body
True
>>> try:
...     Profile.from_json({"features": {"a": {"type": "numeric", "mean": "high"}}})
... except ModelLoadError as exc:
...     print(exc.message)
bad reference profile: features.a.mean: expected a number, got 'high'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ModelLoadError

#: Equal-mass bins of a score's histogram (a bimodal score needs more than 10 equal-width ones).
SCORE_BINS = 32
#: A value held by at least this share of the rows is a point mass (an atom), at most MAX_ATOMS of them.
ATOM_SHARE = 0.01
MAX_ATOMS = 16

#: Kinds of prediction score a classifier's profile names (the last two: no ``predict_proba``).
SCORE_KINDS = frozenset(
    {"positive_class_probability", "max_probability", "decision_function", "max_decision_function"}
)


@dataclass(frozen=True)
class Histogram:
    """Counts of a numeric signal's values in ``len(counts)`` bins between ``edges``, and its point masses.

    ``atoms`` are values that many rows hold exactly, ``atom_counts`` how many rows each (also counted in
    their bins): a replay draws them as points, not spread uniformly over their bin.
    """

    edges: tuple[float, ...]
    counts: tuple[int, ...]
    atoms: tuple[float, ...] = ()
    atom_counts: tuple[int, ...] = ()

    @classmethod
    def of(cls, values: np.ndarray, bins: int = SCORE_BINS, equal_mass: bool = False) -> Histogram:
        """The histogram of finite ``values`` in ``bins`` equal-width (or equal-mass) bins, the values
        that at least ``ATOM_SHARE`` of the rows hold as atoms.

        >>> h = Histogram.of(np.array([0.0] * 6 + [0.5, 1.0, 1.0, 2.0]), 10)
        >>> h.atoms, h.atom_counts
        ((0.0, 1.0), (6, 2))
        """
        if equal_mass:
            edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, bins + 1)))
            counts, edges = np.histogram(values, bins=edges if edges.size > 1 else edges.repeat(2))
        else:
            counts, edges = np.histogram(values, bins=bins)
        points, held = np.unique(values, return_counts=True)
        top = np.argsort(-held, kind="stable")[:MAX_ATOMS]
        top = np.sort(top[held[top] >= max(2, ATOM_SHARE * values.size)])
        return cls(
            tuple(float(e) for e in edges),
            tuple(int(c) for c in counts),
            tuple(float(v) for v in points[top]),
            tuple(int(c) for c in held[top]),
        )

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"edges": list(self.edges), "counts": list(self.counts)}
        if self.atoms:
            body["atoms"] = {"values": list(self.atoms), "counts": list(self.atom_counts)}
        return body


@dataclass(frozen=True)
class NumericFeature:
    """Statistics of a numeric feature over its non-missing values (all ``None`` when it has none)."""

    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    quantiles: Mapping[str, float] | None = None
    histogram: Histogram | None = None
    #: Share of rows that are NaN.
    missing: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "numeric",
            "mean": self.mean,
            "std": self.std,
            "min": self.min,
            "max": self.max,
            "quantiles": None if self.quantiles is None else dict(self.quantiles),
            "histogram": None if self.histogram is None else self.histogram.to_json(),
            "missing": self.missing,
        }


@dataclass(frozen=True)
class CategoricalFeature:
    """Shares of a categorical feature's most frequent categories, most frequent first."""

    categories: Mapping[str, float]
    #: Share of rows in rarer categories than those listed.
    other: float = 0.0
    #: How many categories the sample holds.
    distinct: int = 0
    missing: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "categorical",
            "categories": dict(self.categories),
            "other": self.other,
            "distinct": self.distinct,
            "missing": self.missing,
        }


@dataclass(frozen=True)
class ValueSummary:
    """Mean, spread, quantiles and histogram of a predicted value (a regressor's, a classifier's score)."""

    mean: float
    std: float
    quantiles: Mapping[str, float]
    histogram: Histogram | None = None

    @classmethod
    def of(cls, values: np.ndarray, quantiles: Mapping[str, float]) -> ValueSummary:
        """Exact mean and standard deviation of finite ``values``, and their equal-mass histogram."""
        return cls(
            float(values.mean()), float(values.std()), quantiles, Histogram.of(values, equal_mass=True)
        )

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"mean": self.mean, "std": self.std, "quantiles": dict(self.quantiles)}
        if self.histogram is not None:
            body["histogram"] = self.histogram.to_json()
        return body


@dataclass(frozen=True)
class ClassifierOutputs:
    """What a classifier predicts on the sample: class shares (keys ``str(label)``) and its score's law.

    ``score_summary`` is None in profiles written before it existed: such a score is watched against the
    first requests, never against moments interpolated from ``score_quantiles``.
    """

    class_shares: Mapping[str, float]
    score: str | None = None
    score_quantiles: Mapping[str, float] = field(default_factory=dict)
    score_summary: ValueSummary | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "class_shares": dict(self.class_shares),
            "score": self.score,
            "score_quantiles": dict(self.score_quantiles),
        }
        if self.score_summary is not None:
            body["score_summary"] = self.score_summary.to_json()
        return body


@dataclass(frozen=True)
class RegressorOutputs:
    """What a regressor predicts on the sample (``None`` when every prediction was NaN)."""

    value: ValueSummary | None

    def to_json(self) -> dict[str, Any]:
        return {"value": None if self.value is None else self.value.to_json()}


Feature = NumericFeature | CategoricalFeature
Outputs = ClassifierOutputs | RegressorOutputs


@dataclass(frozen=True)
class Profile:
    """A model's reference profile: per-feature summaries and what the model predicts on the sample."""

    features: Mapping[str, Feature]
    outputs: Outputs | None = None
    #: Rows in the sample.
    rows: int = 0
    #: The monitor's calibration of this profile, measured at conversion (``sluice.monitoring.stored``):
    #: an object the monitor reads, keyed by the settings it was measured under; None if not measured.
    calibration: Mapping[str, Any] | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "rows": self.rows,
            "features": {name: f.to_json() for name, f in self.features.items()},
        }
        if self.outputs is not None:
            body["outputs"] = self.outputs.to_json()
        if self.calibration is not None:
            body["calibration"] = dict(self.calibration)
        return body

    @classmethod
    def from_json(cls, body: Any) -> Profile:
        """The profile in ``body``; ``ModelLoadError`` naming the first malformed key."""
        top = _object(body, "")
        features = {
            str(k): _feature(v, f"features.{k}") for k, v in _object(top.get("features"), "features").items()
        }
        raw = top.get("outputs")
        outputs = None if raw is None else _outputs(_object(raw, "outputs"))
        stored = top.get("calibration")
        calibration = None if stored is None else _object(stored, "calibration")
        return cls(features, outputs, _integer(top.get("rows", 0), "rows"), calibration)


# ----- reading, key by key ------------------------------------------------------------------------


def _fail(where: str, message: str) -> ModelLoadError:
    return ModelLoadError(f"bad reference profile: {where or 'profile'}: {message}", details={"key": where})


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(where, f"expected an object, got {value!r}")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(where, f"expected a number, got {value!r}")
    return float(value)


def _integer(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(where, f"expected an integer, got {value!r}")
    return value


def _optional(value: Any, where: str) -> float | None:
    return None if value is None else _number(value, where)


def _shares(value: Any, where: str) -> dict[str, float]:
    return {str(k): _number(v, f"{where}.{k}") for k, v in _object(value, where).items()}


def _feature(value: Any, where: str) -> Feature:
    body = _object(value, where)
    kind = body.get("type", "numeric")
    if kind == "categorical":
        categories = _shares(body.get("categories", {}), f"{where}.categories")
        return CategoricalFeature(
            categories,
            _number(body.get("other", 0.0), f"{where}.other"),
            _integer(body.get("distinct", len(categories)), f"{where}.distinct"),
            _number(body.get("missing") or 0.0, f"{where}.missing"),
        )
    if kind != "numeric":
        raise _fail(f"{where}.type", f"expected 'numeric' or 'categorical', got {kind!r}")
    quantiles = body.get("quantiles")
    histogram = body.get("histogram")
    return NumericFeature(
        mean=_optional(body.get("mean"), f"{where}.mean"),
        std=_optional(body.get("std"), f"{where}.std"),
        min=_optional(body.get("min"), f"{where}.min"),
        max=_optional(body.get("max"), f"{where}.max"),
        quantiles=None if quantiles is None else _shares(quantiles, f"{where}.quantiles"),
        histogram=None if histogram is None else _histogram(histogram, f"{where}.histogram"),
        missing=_number(body.get("missing") or 0.0, f"{where}.missing"),
    )


def _histogram(value: Any, where: str) -> Histogram:
    body = _object(value, where)
    edges, counts = body.get("edges", []), body.get("counts", [])
    if not isinstance(edges, list) or not isinstance(counts, list):
        raise _fail(where, "expected lists of edges and counts")
    if counts and len(edges) != len(counts) + 1:
        raise _fail(where, f"{len(edges)} edges for {len(counts)} bins (want one more edge than bins)")
    atoms = _object(body.get("atoms", {"values": [], "counts": []}), f"{where}.atoms")
    values, weights = atoms.get("values", []), atoms.get("counts", [])
    if not isinstance(values, list) or not isinstance(weights, list) or len(values) != len(weights):
        raise _fail(f"{where}.atoms", "expected lists of values and counts of one length")
    return Histogram(
        tuple(_number(e, f"{where}.edges") for e in edges),
        tuple(_integer(c, f"{where}.counts") for c in counts),
        tuple(_number(v, f"{where}.atoms.values") for v in values),
        tuple(_integer(c, f"{where}.atoms.counts") for c in weights),
    )


def _summary(value: dict[str, Any], where: str) -> ValueSummary:
    histogram = value.get("histogram")
    return ValueSummary(
        _number(value.get("mean"), f"{where}.mean"),
        _number(value.get("std"), f"{where}.std"),
        _shares(value.get("quantiles") or {}, f"{where}.quantiles"),
        None if histogram is None else _histogram(histogram, f"{where}.histogram"),
    )


def _outputs(body: dict[str, Any]) -> Outputs:
    if "class_shares" in body:
        score = body.get("score")
        if score is not None and score not in SCORE_KINDS:
            raise _fail("outputs.score", f"expected one of {', '.join(sorted(SCORE_KINDS))}, got {score!r}")
        summary = body.get("score_summary")
        return ClassifierOutputs(
            _shares(body["class_shares"], "outputs.class_shares"),
            score,
            _shares(body.get("score_quantiles") or {}, "outputs.score_quantiles"),
            None
            if summary is None
            else _summary(_object(summary, "outputs.score_summary"), "outputs.score_summary"),
        )
    if "value" in body:
        if body["value"] is None:
            return RegressorOutputs(None)
        return RegressorOutputs(_summary(_object(body["value"], "outputs.value"), "outputs.value"))
    raise _fail("outputs", "expected 'class_shares' (a classifier) or 'value' (a regressor)")
