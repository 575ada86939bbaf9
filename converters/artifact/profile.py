"""The reference profile: the typed form of a manifest's ``profile`` object, read and written unchanged.

A converter builds a ``Profile`` from the sample it converted with (``sluice.converters._profile``); the
manifest carries it; monitoring replays it to calibrate its detectors. The JSON form, as written since
format 1::

    {
      "rows": 569,
      "features": {
        "<numeric feature>": {"type": "numeric", "mean": m, "std": s, "min": lo, "max": hi,
                              "quantiles": {"0.01": q, ...}, "histogram": {"edges": [...], "counts": [...]},
                              "missing": 0.0},
        "<categorical feature>": {"type": "categorical", "categories": {"month": 0.55, ...},
                                  "other": 0.0, "distinct": 3, "missing": 0.0}
      },
      "outputs": {"class_shares": {...}, "score": "positive_class_probability", "score_quantiles": {...}}
                 | {"value": {"mean": m, "std": s, "quantiles": {...}} | null}
    }

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

from .errors import ModelLoadError

#: Kinds of prediction score a classifier's profile names (the last two: no ``predict_proba``).
SCORE_KINDS = frozenset(
    {"positive_class_probability", "max_probability", "decision_function", "max_decision_function"}
)


@dataclass(frozen=True)
class Histogram:
    """Counts of a numeric feature's values in ``len(counts)`` bins between ``edges``."""

    edges: tuple[float, ...]
    counts: tuple[int, ...]


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
            "histogram": None
            if self.histogram is None
            else {"edges": list(self.histogram.edges), "counts": list(self.histogram.counts)},
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
class ClassifierOutputs:
    """What a classifier predicts on the sample: class shares (keys ``str(label)``) and score quantiles."""

    class_shares: Mapping[str, float]
    score: str | None = None
    score_quantiles: Mapping[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "class_shares": dict(self.class_shares),
            "score": self.score,
            "score_quantiles": dict(self.score_quantiles),
        }


@dataclass(frozen=True)
class ValueSummary:
    """Mean, spread and quantiles of a regressor's predicted value."""

    mean: float
    std: float
    quantiles: Mapping[str, float]


@dataclass(frozen=True)
class RegressorOutputs:
    """What a regressor predicts on the sample (``None`` when every prediction was NaN)."""

    value: ValueSummary | None

    def to_json(self) -> dict[str, Any]:
        v = self.value
        return {
            "value": None if v is None else {"mean": v.mean, "std": v.std, "quantiles": dict(v.quantiles)}
        }


Feature = NumericFeature | CategoricalFeature
Outputs = ClassifierOutputs | RegressorOutputs


@dataclass(frozen=True)
class Profile:
    """A model's reference profile: per-feature summaries and what the model predicts on the sample."""

    features: Mapping[str, Feature]
    outputs: Outputs | None = None
    #: Rows in the sample.
    rows: int = 0

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "rows": self.rows,
            "features": {name: f.to_json() for name, f in self.features.items()},
        }
        if self.outputs is not None:
            body["outputs"] = self.outputs.to_json()
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
        return cls(features, outputs, _integer(top.get("rows", 0), "rows"))


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
    return Histogram(
        tuple(_number(e, f"{where}.edges") for e in edges),
        tuple(_integer(c, f"{where}.counts") for c in counts),
    )


def _outputs(body: dict[str, Any]) -> Outputs:
    if "class_shares" in body:
        score = body.get("score")
        if score is not None and score not in SCORE_KINDS:
            raise _fail("outputs.score", f"expected one of {', '.join(sorted(SCORE_KINDS))}, got {score!r}")
        return ClassifierOutputs(
            _shares(body["class_shares"], "outputs.class_shares"),
            score,
            _shares(body.get("score_quantiles") or {}, "outputs.score_quantiles"),
        )
    if "value" in body:
        if body["value"] is None:
            return RegressorOutputs(None)
        value = _object(body["value"], "outputs.value")
        return RegressorOutputs(
            ValueSummary(
                _number(value.get("mean"), "outputs.value.mean"),
                _number(value.get("std"), "outputs.value.std"),
                _shares(value.get("quantiles") or {}, "outputs.value.quantiles"),
            )
        )
    raise _fail("outputs", "expected 'class_shares' (a classifier) or 'value' (a regressor)")
