"""scikit-learn models: what is supported, how to describe them, and how skl2onnx turns them into ONNX.

Everything that knows about scikit-learn or skl2onnx lives here; the rest of ``converters`` sees a
``SklearnModel`` with a task, class labels, feature names, ``predict`` and ``to_onnx``. Another
framework slots in as a sibling module offering the same small surface.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from server.errors import ConversionError

#: ONNX opsets we emit. 17 is skl2onnx's best-tested default domain opset and loads on every
#: onnxruntime the gateway accepts (>= 1.18); ai.onnx.ml 3 is what the tree converters target.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}

# Longest foreign error text we quote: skl2onnx dumps whole node attribute lists into its messages.
_MAX_CAUSE_CHARS = 300


def _supported() -> tuple[dict[type, str], tuple[type, ...]]:
    from sklearn.ensemble import (
        GradientBoostingClassifier,
        GradientBoostingRegressor,
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.preprocessing import MinMaxScaler, StandardScaler
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    estimators: dict[type, str] = {
        LogisticRegression: "classification",
        GradientBoostingClassifier: "classification",
        RandomForestClassifier: "classification",
        DecisionTreeClassifier: "classification",
        HistGradientBoostingClassifier: "classification",
        MLPClassifier: "classification",
        LinearRegression: "regression",
        Ridge: "regression",
        GradientBoostingRegressor: "regression",
        RandomForestRegressor: "regression",
        DecisionTreeRegressor: "regression",
        HistGradientBoostingRegressor: "regression",
        MLPRegressor: "regression",
    }
    return estimators, (StandardScaler, MinMaxScaler, SimpleImputer)


def supported_names() -> list[str]:
    estimators, transformers = _supported()
    return sorted(c.__name__ for c in estimators) + sorted(c.__name__ for c in transformers)


def short_cause(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= _MAX_CAUSE_CHARS else text[:_MAX_CAUSE_CHARS] + " …"


class SklearnModel:
    """A fitted, supported scikit-learn estimator or Pipeline, inspected once."""

    def __init__(self, model: Any) -> None:
        from sklearn.pipeline import Pipeline

        estimators, transformers = _supported()
        if isinstance(model, Pipeline):
            steps = [(n, s) for n, s in model.steps if s is not None and s != "passthrough"]
        else:
            steps = [("", model)]
        if not steps:
            raise ConversionError("the Pipeline has no steps to convert")
        for position, (step_name, step) in enumerate(steps):
            last = position == len(steps) - 1
            allowed = estimators if last else transformers
            if type(step) not in allowed:
                where = f" (Pipeline step {step_name!r})" if step_name else ""
                what = "estimator" if hasattr(step, "fit") else "model object"
                raise ConversionError(
                    f"unsupported {what} {type(step).__name__}{where}; "
                    f"supported: {', '.join(supported_names())}",
                    details={"estimator": type(step).__name__},
                )
        self.model = model
        self.task = estimators[type(steps[-1][1])]
        names = [type(s).__name__ for _, s in steps]
        self.description = f"Pipeline({', '.join(names)})" if isinstance(model, Pipeline) else names[0]
        self._check_fitted()
        self.n_features = int(model.n_features_in_)
        names_in = getattr(model, "feature_names_in_", None)
        self.feature_names_in = [str(n) for n in names_in] if names_in is not None else None
        self.class_labels: list[Any] | None = None
        if self.task == "classification":
            self.class_labels = [c.item() if isinstance(c, np.generic) else c for c in model.classes_]

    def _check_fitted(self) -> None:
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted

        try:
            check_is_fitted(self.model)
        except NotFittedError as exc:
            raise ConversionError(
                f"model is not fitted: call fit() on the {self.description} before converting it"
            ) from exc

    def feature_names(self, given: Sequence[str] | None) -> list[str]:
        names = list(given) if given is not None else self.feature_names_in
        if names is None:
            return [f"f{i}" for i in range(self.n_features)]
        names = [str(n) for n in names]
        if len(names) != self.n_features:
            raise ConversionError(
                f"{len(names)} feature names given but the model takes {self.n_features} features"
            )
        if len(set(names)) != len(names):
            raise ConversionError("feature names must be unique")
        return names

    def predict(self, x: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """(labels, scores): labels and class probabilities, or (None, values) for a regressor."""
        with warnings.catch_warnings():
            # A model fitted on a DataFrame warns about ndarray input; the columns are already in order.
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
            if self.task == "classification":
                return np.asarray(self.model.predict(x)), np.asarray(self.model.predict_proba(x))
            return None, np.asarray(self.model.predict(x), dtype=np.float64)

    def to_onnx(self, precision: str) -> bytes:
        """Serialized ONNX graph with input ``input`` of ``precision`` ("float32" or "float64")."""
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

        tensor_type = FloatTensorType if precision == "float32" else DoubleTensorType
        options = {"zipmap": False} if self.task == "classification" else None
        try:
            with warnings.catch_warnings():
                # skl2onnx's own deprecation chatter is not the user's problem; failures raise.
                warnings.simplefilter("ignore")
                onx = convert_sklearn(
                    _compatible_copy(self.model),
                    initial_types=[("input", tensor_type([None, self.n_features]))],
                    options=options,
                    target_opset=TARGET_OPSET,
                )
        except Exception as exc:  # skl2onnx raises anything from RuntimeError to ValueError
            raise ConversionError(
                f"skl2onnx cannot convert {self.description} with {precision} input: {short_cause(exc)}"
            ) from exc
        return bytes(onx.SerializeToString())


def _compatible_copy(model: Any) -> Any:
    """The model, or a copy skl2onnx 1.20 can read.

    scikit-learn 1.9 stores HistGradientBoosting node child ids as uint32, which skl2onnx passes on as
    numpy scalars that onnx refuses as attribute values. The copy widens them to int64; the user's
    model is never modified, and only skl2onnx sees the copy.
    """
    from sklearn.pipeline import Pipeline

    final = model.steps[-1][1] if isinstance(model, Pipeline) else model
    predictors = getattr(final, "_predictors", None)
    if not predictors:
        return model
    nodes = predictors[0][0].nodes
    if not all(nodes.dtype[f] == np.uint32 for f in ("left", "right") if f in nodes.dtype.names):
        return model
    model = copy.deepcopy(model)
    final = model.steps[-1][1] if isinstance(model, Pipeline) else model
    for per_iteration in final._predictors:
        for predictor in per_iteration:
            dtype = [(f, np.int64 if f in ("left", "right") else t) for f, t in predictor.nodes.dtype.descr]
            predictor.nodes = predictor.nodes.astype(dtype)
    return model


def synthetic_sample(model: Any, rows: int = 1000, seed: int = 0) -> tuple[np.ndarray, str] | None:
    """Rows drawn from what a leading scaler learned, or None when the model carries no such range.

    StandardScaler gives per-feature mean and scale (a gaussian); MinMaxScaler gives the training
    minimum and maximum (a uniform). It is only good enough for a parity check, never for a profile.
    """
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    if not isinstance(model, Pipeline) or not model.steps:
        return None
    first = model.steps[0][1]
    rng = np.random.default_rng(seed)
    if type(first) is StandardScaler:
        mean, scale = getattr(first, "mean_", None), getattr(first, "scale_", None)
        if mean is None or scale is None:
            return None
        return rng.normal(mean, scale, size=(rows, len(mean))), "gaussian from StandardScaler mean_/scale_"
    if type(first) is MinMaxScaler:
        low, high = getattr(first, "data_min_", None), getattr(first, "data_max_", None)
        if low is None or high is None:
            return None
        return rng.uniform(low, high, size=(rows, len(low))), "uniform from MinMaxScaler data_min_/data_max_"
    return None
