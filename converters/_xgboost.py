"""XGBoost boosters (``xgboost.Booster``, saved by ``save_model`` as .json or .ubj) as a FrameworkModel.

An ``XGBClassifier`` or ``XGBRegressor`` goes through the scikit-learn adapter instead (it knows its
classes); this one is for the booster itself, trained with ``xgboost.train`` or loaded from its file.
What is read from the booster (its saved configuration), and what is assumed:

- the task from its objective: ``binary:logistic`` and ``multi:softprob`` are classifiers (the ones
  whose ``predict`` gives probabilities); ``reg:*`` and ``count:poisson`` regressors. Other
  classification objectives are refused with what to do instead; ranking, survival and multi-output
  boosters are refused;
- the class labels are ``0 .. num_class - 1`` (``[0, 1]`` for ``binary:logistic``): a booster was
  trained on those integers, and whatever labels they stood for are not in the file;
- the feature names from ``feature_names`` when it was trained with names, else none (the sample's
  header or ``f0, f1, ...`` then); categorical features are not supported.

    >>> import numpy as np, xgboost
    >>> x = np.random.default_rng(0).normal(size=(200, 3))
    >>> data = xgboost.DMatrix(x, x @ [1.0, 2.0, 3.0], feature_names=["a", "b", "c"])
    >>> model = XGBoostBooster(xgboost.train({"objective": "reg:squarederror"}, data, 5))
    >>> model.task, model.class_labels, model.feature_names, model.description
    ('regression', None, ['a', 'b', 'c'], 'XGBoost Booster(objective=reg:squarederror, 5 rounds)')
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sluice.converters.artifact.errors import ConversionError

from . import _booster
from ._framework import short_cause

_CLASSIFIERS = ("binary:logistic", "multi:softprob")
#: Classification objectives whose ``predict`` gives no probabilities -> what to do instead.
_NO_PROBABILITIES = {
    "multi:softmax": "set_param(objective='multi:softprob') gives the same trees with probabilities",
    "binary:logitraw": "set_param(objective='binary:logistic') gives the same trees with probabilities",
    "binary:hinge": "retrain with binary:logistic",
}
_REFUSED_PREFIXES = ("rank:", "survival:")


def load(path: Path) -> Any:
    """The booster saved at ``path`` by ``Booster.save_model`` (.json, .ubj)."""
    xgboost = _booster.require("xgboost", "xgboost")
    try:
        with warnings.catch_warnings():
            # Another suffix than .json/.ubj: XGBoost warns that it guesses the format; a wrong guess fails.
            warnings.simplefilter("ignore", UserWarning)
            return xgboost.Booster(model_file=str(path))
    except Exception as exc:  # XGBoostError for a foreign file, OSError for an unreadable one
        raise ConversionError(f"{path}: not an XGBoost model file ({short_cause(exc)})") from exc


class XGBoostBooster:
    """An ``xgboost.Booster``, inspected once (see the module's docstring for what is assumed)."""

    framework = "xgboost"
    converter = "onnxmltools"
    distributions = ("xgboost", "onnxmltools", "onnx", "onnxruntime", "numpy")
    target_opset = _booster.TARGET_OPSET
    precisions = _booster.PRECISIONS
    per_column_inputs = False

    def __init__(self, booster: Any) -> None:
        self.booster = booster
        learner = json.loads(booster.save_config())["learner"]
        objective = str(learner["objective"]["name"])
        params = learner["learner_model_param"]
        self.objective = objective
        self.n_features = int(booster.num_features())
        self.description = f"XGBoost Booster(objective={objective}, {booster.num_boosted_rounds()} rounds)"
        if objective in _NO_PROBABILITIES:
            raise ConversionError(
                f"the {self.description} predicts no probabilities, which sluice serves for a "
                f"classifier: {_NO_PROBABILITIES[objective]}"
            )
        if objective.startswith(_REFUSED_PREFIXES) or int(params.get("num_target", 1)) > 1:
            raise ConversionError(
                f"the {self.description} is not a classifier or a single-output regressor, which is "
                "what sluice serves"
            )
        if "c" in (booster.feature_types or ()):
            raise ConversionError(
                f"the {self.description} has categorical features, which onnxmltools cannot convert"
            )
        names = booster.feature_names
        self.feature_names: list[str] | None = [str(n) for n in names] if names else None
        self.class_labels: list[Any] | None = None
        if objective in _CLASSIFIERS:
            self.task, self.compared = "classification", "probabilities"
            self.class_labels = list(range(max(int(params.get("num_class", 0)), 2)))
        else:
            self.task, self.compared = "regression", "value"

    def predict(self, x: Any) -> tuple[np.ndarray | None, np.ndarray]:
        import xgboost

        matrix = xgboost.DMatrix(np.asarray(x, dtype=np.float64), feature_names=self.feature_names)
        predicted = self.booster.predict(matrix)
        if self.class_labels is None:
            return None, np.asarray(predicted, dtype=np.float64)
        return _booster.probability_table(predicted, len(self.class_labels))

    def to_onnx(self, precision: str, inputs: Sequence[tuple[str, str]]) -> bytes:
        from onnxmltools import convert_xgboost

        _booster.check_inputs(precision, inputs, self.description)
        # onnxmltools reads split features as "f<index>"; the graph's input is a matrix in that order.
        unnamed = self.booster.copy()
        unnamed.feature_names = None
        return _booster.to_onnx(convert_xgboost, unnamed, self.n_features, self.description)

    def synthetic_sample(self) -> tuple[np.ndarray | None, str]:
        return None, _booster.NO_SYNTHETIC_SAMPLE
