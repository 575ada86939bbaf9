"""LightGBM boosters (``lightgbm.Booster``, as ``save_model`` writes them to a .txt file) as a FrameworkModel.

An ``LGBMClassifier`` or ``LGBMRegressor`` goes through the scikit-learn adapter instead (it knows its
classes); this one is for the booster itself, trained with ``lightgbm.train`` or loaded from its file.
What is read from the booster, and what is assumed:

- the task from its objective: ``binary`` and ``multiclass`` are classifiers; ``regression`` (and
  the other regression objectives onnxmltools converts: l1, huber, poisson, quantile, gamma, tweedie)
  regressors; ranking objectives are refused;
- the class labels are ``0 .. num_class - 1`` (``[0, 1]`` for ``binary``): a booster was trained on
  those integers, and whatever labels they stood for are not in the file;
- the feature names from ``feature_name()``, except LightGBM's own ``Column_0, Column_1, ...``, which
  only say that the booster was trained without names (the sample's header or ``f0, f1, ...`` then);
- predictions are ``predict``'s, on all numbers (categorical features are not supported).

    >>> import lightgbm, numpy as np
    >>> x = np.random.default_rng(0).normal(size=(200, 3))
    >>> params = {"objective": "binary", "verbose": -1}
    >>> booster = lightgbm.train(params, lightgbm.Dataset(x, (x[:, 0] > 0).astype(int)), 5)
    >>> model = LightGBMBooster(booster)
    >>> model.task, model.class_labels, model.feature_names, model.description
    ('classification', [0, 1], None, 'LightGBM Booster(objective=binary, 5 rounds)')
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sluice.converters.artifact.errors import ConversionError

from . import _booster
from ._framework import short_cause

_CLASSIFIERS = ("binary", "multiclass", "multiclassova")
_RANKERS = ("lambdarank", "rank_xendcg")
_UNNAMED = "Column_"


def load(path: Path) -> Any:
    """The booster saved at ``path`` by ``Booster.save_model`` (LightGBM's text format)."""
    lightgbm = _booster.require("lightgbm", "lightgbm")
    try:
        return lightgbm.Booster(model_file=str(path))
    except Exception as exc:  # LightGBMError for a foreign file, OSError for an unreadable one
        raise ConversionError(f"{path}: not a LightGBM model file ({short_cause(exc)})") from exc


class LightGBMBooster:
    """A ``lightgbm.Booster``, inspected once (see the module's docstring for what is assumed)."""

    framework = "lightgbm"
    converter = "onnxmltools"
    distributions = ("lightgbm", "onnxmltools", "onnx", "onnxruntime", "numpy")
    target_opset = _booster.TARGET_OPSET
    precisions = _booster.PRECISIONS
    per_column_inputs = False

    def __init__(self, booster: Any) -> None:
        self.booster = booster
        # The dump's objective is the canonical name ("binary sigmoid:1"), whatever alias trained it.
        objective = str(booster.dump_model(num_iteration=1)["objective"]).split()[0]
        self.objective = objective
        self.n_features = int(booster.num_feature())
        self.description = f"LightGBM Booster(objective={objective}, {booster.current_iteration()} rounds)"
        if objective.startswith(_RANKERS):
            raise ConversionError(
                f"the {self.description} ranks: sluice serves classifiers and regressors, not rankers"
            )
        names = [str(n) for n in booster.feature_name()]
        unnamed = names == [f"{_UNNAMED}{i}" for i in range(len(names))]
        self.feature_names: list[str] | None = None if unnamed else names
        self.class_labels: list[Any] | None = None
        if objective in _CLASSIFIERS:
            self.task, self.compared = "classification", "probabilities"
            self.class_labels = list(range(max(int(booster.num_model_per_iteration()), 2)))
        else:
            self.task, self.compared = "regression", "value"

    def predict(self, x: Any) -> tuple[np.ndarray | None, np.ndarray]:
        predicted = self.booster.predict(np.asarray(x, dtype=np.float64))
        if self.class_labels is None:
            return None, np.asarray(predicted, dtype=np.float64)
        return _booster.probability_table(predicted, len(self.class_labels))

    def to_onnx(self, precision: str, inputs: Sequence[tuple[str, str]]) -> bytes:
        from onnxmltools import convert_lightgbm

        _booster.check_inputs(precision, inputs, self.description)
        return _booster.to_onnx(
            convert_lightgbm, self.booster, self.n_features, self.description, zipmap=False
        )

    def synthetic_sample(self) -> tuple[np.ndarray | None, str]:
        return None, _booster.NO_SYNTHETIC_SAMPLE
