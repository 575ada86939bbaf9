"""Framework model -> ONNX + manifest (+ reference profile), parity-checked; behind ``sluice convert``.

``convert`` takes a scikit-learn estimator or Pipeline, a ``lightgbm.Booster``, an ``xgboost.Booster``
or any ``FrameworkModel`` (the adapter protocol); ``import_onnx`` takes an existing ``.onnx`` file.

Never imports the web stack: of the rest of sluice, only the artifact contract
(``sluice.converters.artifact``: ``manifest``, ``errors``, ``datatypes``).

    >>> from pathlib import Path
    >>> import tempfile
    >>> from sluice.converters import convert
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> x, y = load_iris(return_X_y=True)
    >>> model = LogisticRegression(max_iter=1000).fit(x, y)
    >>> result = convert(model, x, repository=Path(tempfile.mkdtemp()), name="iris")
    >>> result.version, result.manifest.class_labels, result.report.passed
    (1, [0, 1, 2], True)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._conversion import ConversionResult, convert
    from ._framework import FrameworkModel
    from ._importer import import_onnx
    from ._parity import ParityReport, Tolerance, WorstRow

__all__ = [
    "ConversionResult",
    "FrameworkModel",
    "ParityReport",
    "Tolerance",
    "WorstRow",
    "convert",
    "import_onnx",
]

# Loaded on first use: the gateway and the monitor import the ``artifact`` leaf below this package, and
# importing a subpackage runs this file first; they should not pay for the conversion machinery.
_HOMES = {
    "ConversionResult": "._conversion",
    "convert": "._conversion",
    "FrameworkModel": "._framework",
    "import_onnx": "._importer",
    "ParityReport": "._parity",
    "Tolerance": "._parity",
    "WorstRow": "._parity",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'sluice.converters' has no attribute {name!r}")
    return getattr(importlib.import_module(home, __name__), name)
