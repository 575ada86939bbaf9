"""scikit-learn models: what is supported, how to describe them, and how skl2onnx turns them into ONNX.

Everything that knows about scikit-learn or skl2onnx lives here (the table of supported estimators in
``_support``); the rest of ``converters`` sees a ``FrameworkModel``. LightGBM and XGBoost estimators
with the scikit-learn API (``LGBMClassifier``, ``XGBRegressor``, ...) convert here too, alone or as the
last step of a Pipeline; their bare boosters have adapters of their own (``_lightgbm``, ``_xgboost``).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from sluice.converters.artifact.errors import ConversionError

from ._framework import short_cause

#: ONNX opsets we emit. 17 is skl2onnx's best-tested default domain opset and loads on every
#: onnxruntime the gateway accepts (>= 1.18); ai.onnx.ml 3 is what the tree converters target.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
_DISTRIBUTIONS = ("scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy")
#: Packages of sklearn-API boosters -> the extra distributions their conversion depends on.
_BOOSTER_DISTRIBUTIONS = {"lightgbm": ("lightgbm", "onnxmltools"), "xgboost": ("xgboost", "onnxmltools")}


class SklearnModel:
    """A fitted, supported scikit-learn estimator or Pipeline, inspected once.

    ``compared`` says which output parity measures: "probabilities" (``predict_proba``), "scores" (a
    classifier without probabilities, such as SVC or a hinge-loss SGDClassifier: ``decision_function``)
    or "value" (a regressor).
    """

    framework = "scikit-learn"
    converter = "skl2onnx"
    target_opset = TARGET_OPSET
    precisions = ("float32", "float64")

    def __init__(self, model: Any) -> None:
        from ._support import check, contains_column_transformer

        self.model = model
        self.task, self.description, final = check(model)
        self._check_fitted()
        self.n_features = int(model.n_features_in_)
        names_in = getattr(model, "feature_names_in_", None)
        self.feature_names = [str(n) for n in names_in] if names_in is not None else None
        self.per_column_inputs = contains_column_transformer(model)
        package = type(final).__module__.partition(".")[0]
        self.distributions = _DISTRIBUTIONS + _BOOSTER_DISTRIBUTIONS.get(package, ())
        self.class_labels: list[Any] | None = None
        self.compared = "value"
        if self.task == "classification":
            self.class_labels = [c.item() if isinstance(c, np.generic) else c for c in model.classes_]
            self.compared = "probabilities" if hasattr(model, "predict_proba") else "scores"

    def _check_fitted(self) -> None:
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted

        try:
            check_is_fitted(self.model)
        except NotFittedError as exc:
            raise ConversionError(
                f"model is not fitted: call fit() on the {self.description} before converting it"
            ) from exc

    def predict(self, x: Any) -> tuple[np.ndarray | None, np.ndarray]:
        with warnings.catch_warnings():
            # A model fitted on a DataFrame warns about ndarray input; the columns are already in order.
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
            if self.compared == "probabilities":
                return np.asarray(self.model.predict(x)), np.asarray(self.model.predict_proba(x))
            if self.compared == "scores":
                scores = np.asarray(self.model.decision_function(x), dtype=np.float64)
                return np.asarray(self.model.predict(x)), scores.reshape(len(scores), -1)
            return None, np.asarray(self.model.predict(x), dtype=np.float64)

    def to_onnx(self, precision: str, inputs: Sequence[tuple[str, str]]) -> bytes:
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, StringTensorType

        number = FloatTensorType if precision == "float32" else DoubleTensorType
        initial_types = [
            (
                name,
                number([None, self.n_features])
                if kind == "matrix"
                else StringTensorType([None, 1])
                if kind == "categorical"
                else number([None, 1]),
            )
            for name, kind in inputs
        ]
        options = {"zipmap": False} if self.task == "classification" else None
        try:
            with warnings.catch_warnings():
                # skl2onnx's own deprecation chatter is not the user's problem; failures raise.
                warnings.simplefilter("ignore")
                onx = convert_sklearn(
                    _compatible_copy(self.model),
                    initial_types=initial_types,
                    options=options,
                    target_opset=TARGET_OPSET,
                )
        except Exception as exc:  # skl2onnx raises anything from RuntimeError to ValueError
            raise ConversionError(
                f"skl2onnx cannot convert {self.description} with {precision} input: {short_cause(exc)}"
            ) from exc
        return bytes(onx.SerializeToString())

    def synthetic_sample(self) -> tuple[np.ndarray | None, str]:
        drawn = _synthetic_sample(self.model)
        if drawn is None:
            return (
                None,
                "the model has no leading StandardScaler or MinMaxScaler to draw a synthetic sample from",
            )
        return drawn


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


def _synthetic_sample(model: Any, rows: int = 1000, seed: int = 0) -> tuple[np.ndarray, str] | None:
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
