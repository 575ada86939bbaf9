"""What the monitor is told about a version: where its features and predictions sit, how to watch it,
and what each finished request hands over.

``Layout`` is read from the version's signature (feature names from its manifest); ``WatchOptions``
from the model's ``monitoring:`` config; an ``Observation`` is the hot path's whole contribution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

#: Features watched per version at most (metric labels stay bounded).
MAX_FEATURES = 64


class Observation(NamedTuple):
    """What the hot path hands over for one finished request."""

    inputs: dict[str, np.ndarray] | None
    outputs: dict[str, np.ndarray] | None
    latency_s: float
    error: bool  # the version's fault (a 5xx)
    at: float  # monotonic time
    client_error: bool = False  # a 4xx: counted in the client-errors stream only


@dataclass(frozen=True)
class FeatureSource:
    """Where one feature's values are: a column of a 2-D input, or a whole 1-D input."""

    name: str
    input: str
    column: int | None = None
    categorical: bool = False


@dataclass(frozen=True)
class Layout:
    """Where a version's features and predictions are in its inputs and outputs."""

    features: tuple[FeatureSource, ...]
    score_output: str | None = None
    score_is_probability: bool = True
    label_output: str | None = None
    class_labels: tuple[str, ...] = ()

    @classmethod
    def from_signature(
        cls,
        inputs: Sequence[tuple[str, str, Sequence[int], Sequence[str]]],
        outputs: Sequence[tuple[str, str]],
        class_labels: Sequence[Any] | None = None,
        *,
        only: Sequence[str] | None = None,
        categorical: Sequence[str] = (),
    ) -> Layout:
        """From ``(name, datatype, shape, feature names)`` per input and ``(name, role)`` per output."""
        features: list[FeatureSource] = []
        for name, datatype, shape, names in inputs:
            is_text = datatype == "BYTES"
            if len(shape) == 2 and shape[1] > 0:
                cols = list(names) if len(names) == shape[1] else [f"{name}[{j}]" for j in range(shape[1])]
                features += [
                    FeatureSource(c, name, j, is_text or c in categorical) for j, c in enumerate(cols)
                ]
            elif len(shape) <= 1 or (len(shape) == 2 and shape[1] == 1):
                feature = names[0] if len(names) == 1 else name
                features.append(FeatureSource(feature, name, None, is_text or feature in categorical))
        if only is not None:
            wanted = set(only)
            features = [f for f in features if f.name in wanted]
        roles = {role: name for name, role in outputs}
        score = roles.get("probabilities") or roles.get("value")
        return cls(
            features=tuple(features[:MAX_FEATURES]),
            score_output=score,
            score_is_probability="probabilities" in roles,
            label_output=roles.get("label"),
            class_labels=tuple(str(c) for c in class_labels or ()),
        )


class WatchOptions(BaseModel):
    """How one version is watched: the ``monitoring:`` section of the model's ``config.yaml`` itself.

    One type for the file and the monitor: the gateway validates ``config.yaml`` with it and hands it on,
    filling ``watch_missing`` from the model's ``allow_nan`` when the file leaves it unset.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="Watch this model's versions.")
    sample_rate: float = Field(1.0, gt=0, le=1, description="Share of requests the monitor sees.")
    features: list[str] | None = Field(None, description="Features to watch (default: all, at most 64).")
    categorical: list[str] = Field(
        default_factory=list, description="Numeric-typed features to treat as categories."
    )
    target_false_alarms_per_100k: float = Field(
        10.0,
        gt=0,
        description="False alarms per 100k samples the whole monitor of a version may raise on stable "
        "traffic; split across its detectors (at most 1 per detector).",
    )
    reference_size: int = Field(
        2000,
        ge=100,
        description="Rows (requests for latency and errors) taken as the reference when the version has "
        "no reference profile.",
    )
    window_rows: int = Field(1000, ge=50, description="Rows per tumbling window for PSI / Jensen-Shannon.")
    watch_missing: bool | None = Field(
        None,
        description="Watch each numeric feature's share of missing values (NaN); default: when the model "
        "accepts NaN (`allow_nan`).",
    )


def row_scores(values: Any, probabilities: bool) -> np.ndarray:
    """One score per row of an output: the positive class's probability, the top one, or the value."""
    s = np.asarray(values, dtype=np.float64)
    if probabilities and s.ndim == 2:
        s = s[:, -1] if s.shape[1] <= 2 else s.max(axis=1)
    scores: np.ndarray = s.reshape(len(s), -1)[:, 0]
    return scores
