"""What LightGBM and XGBoost boosters share: an optional import, onnxmltools, probabilities in a table.

A booster loaded from its own file is not a scikit-learn estimator: it has no ``classes_``, no
``predict_proba`` and often no feature names. What each adapter reads from its booster instead is in
``_lightgbm`` and ``_xgboost``; the conversion itself is onnxmltools' in both cases.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from sluice.converters.artifact.errors import ConversionError

from . import _onnx
from ._framework import short_cause

#: onnxmltools' newest default-domain opset (1.16); it writes the oldest opsets the graph needs.
TARGET_OPSET = {"": 15}
#: onnxmltools' booster converters build float tree ensembles only.
PRECISIONS = ("float32",)
NO_SYNTHETIC_SAMPLE = (
    "a booster records split thresholds, not how its features are distributed, so there is nothing to "
    "draw rows from; pass rows like the traffic it will see"
)


def require(module: str, extra: str) -> ModuleType:
    """Import ``module``, or say which extra of sluice-gateway brings it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConversionError(
            f"{module} is not installed: pip install 'sluice-gateway[{extra}]' to convert its models"
        ) from exc


def probability_table(predicted: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities with one column per class) from a booster's ``predict``.

    A binary booster predicts the probability of class 1 alone; the graph serves both columns.
    """
    p = np.asarray(predicted, dtype=np.float64)
    table = np.column_stack([1.0 - p, p]) if n_classes == 2 and p.ndim == 1 else p.reshape(len(p), -1)
    return table.argmax(axis=1).astype(np.int64), table


def check_inputs(precision: str, inputs: Sequence[tuple[str, str]], description: str) -> None:
    """Boosters take one float32 matrix; a sample with string columns cannot feed one."""
    if precision not in PRECISIONS:
        raise ConversionError(f"onnxmltools converts a {description} to a float32 graph only")
    if len(inputs) != 1 or inputs[0][1] != "matrix":
        text = [name for name, kind in inputs if kind == "categorical"]
        raise ConversionError(
            f"a {description} takes numbers only, one matrix of features; the sample's column(s) "
            f"{', '.join(map(repr, text))} hold strings: encode them as numbers as in training"
        )


def to_onnx(
    convert: Callable[..., Any], booster: Any, n_features: int, description: str, **options: Any
) -> bytes:
    """Run an onnxmltools ``convert_*`` on ``booster`` with one float32 matrix input called "input"."""
    from onnxmltools.convert.common.data_types import FloatTensorType

    try:
        with warnings.catch_warnings():
            # onnxmltools' own deprecation and numpy chatter is not the user's problem; failures raise.
            warnings.simplefilter("ignore")
            onx = convert(
                booster,
                initial_types=[("input", FloatTensorType([None, n_features]))],
                target_opset=TARGET_OPSET[""],
                **options,
            )
    except Exception as exc:  # onnxmltools raises RuntimeError, NotImplementedError, ValueError, ...
        raise ConversionError(f"onnxmltools cannot convert the {description}: {short_cause(exc)}") from exc
    return _onnx.free_batch_dim(bytes(onx.SerializeToString()))
