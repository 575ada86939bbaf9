"""The framework adapter: what ``convert`` needs from a fitted model, whichever library trained it.

``convert`` never asks which library a model comes from; it asks a ``FrameworkModel`` for the task, the
class labels, the feature names, predictions on the sample, and an ONNX graph. ``_adapters.adapt`` picks
the adapter from the object it is given:

    scikit-learn estimator or Pipeline   ``SklearnModel`` (``_sklearn``; LightGBM / XGBoost
                                          sklearn-API wrappers included, alone or in a Pipeline)
    ``lightgbm.Booster``                 ``LightGBMBooster`` (``_lightgbm``)
    ``xgboost.Booster``                  ``XGBoostBooster`` (``_xgboost``)
    anything that is a FrameworkModel    used as it is

A new framework is one module with one class that satisfies the protocol, and one line in ``adapt``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

# Longest foreign error text we quote: skl2onnx dumps whole node attribute lists into its messages.
_MAX_CAUSE_CHARS = 300


@runtime_checkable
class FrameworkModel(Protocol):
    """A fitted model as ``convert`` sees it, inspected once when the adapter is built.

    ``compared`` says which output parity measures: "probabilities", "scores" (a classifier's decision
    function, for one without probabilities) or "value" (a regressor).
    """

    @property
    def framework(self) -> str:
        """The manifest's ``source.framework``: "scikit-learn", "lightgbm", "xgboost", ..."""
        ...

    @property
    def description(self) -> str:
        """What the model is, for messages and ``source.estimator``: "Pipeline(StandardScaler, Ridge)"."""
        ...

    @property
    def converter(self) -> str:
        """The library that writes the graph ("skl2onnx", "onnxmltools"), for progress messages."""
        ...

    @property
    def distributions(self) -> Sequence[str]:
        """Installed distributions whose versions go into ``source.versions``."""
        ...

    @property
    def target_opset(self) -> Mapping[str, int]:
        """The opsets asked of the converter, recorded in ``source.options``."""
        ...

    @property
    def precisions(self) -> Sequence[str]:
        """Graph input precisions to try, in order: "float32" first, "float64" where the converter can."""
        ...

    @property
    def task(self) -> str:
        """ "classification" or "regression"."""
        ...

    @property
    def compared(self) -> str: ...

    @property
    def class_labels(self) -> list[Any] | None:
        """A classifier's labels: column j of its probabilities is ``class_labels[j]``."""
        ...

    @property
    def n_features(self) -> int: ...

    @property
    def feature_names(self) -> list[str] | None:
        """The names the model knows its columns by (a sample is matched to them), or None."""
        ...

    @property
    def per_column_inputs(self) -> bool:
        """Whether a named sample becomes one graph input per column (a ColumnTransformer's inputs)."""
        ...

    def predict(self, x: Any) -> tuple[np.ndarray | None, np.ndarray]:
        """(labels, probabilities or decision scores) of a classifier; (None, values) of a regressor."""
        ...

    def to_onnx(self, precision: str, inputs: Sequence[tuple[str, str]]) -> bytes:
        """Serialized ONNX graph; ``inputs`` are (name, "matrix" | "numeric" | "categorical") pairs."""
        ...

    def synthetic_sample(self) -> tuple[np.ndarray | None, str]:
        """(rows good enough for a parity check, how they were drawn), or (None, why there are none)."""
        ...


def short_cause(exc: BaseException) -> str:
    """A foreign exception's message on one line, cut to a readable length."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= _MAX_CAUSE_CHARS else text[:_MAX_CAUSE_CHARS] + " …"
