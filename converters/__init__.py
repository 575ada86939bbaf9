"""Framework model -> ONNX + manifest (+ reference profile), parity-checked; behind ``sluice convert``.

Never imports the web stack: only ``sluice.converters.artifact.manifest``, ``sluice.converters.artifact.errors`` and ``sluice.converters.artifact.datatypes``.

    >>> from pathlib import Path
    >>> import tempfile
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> x, y = load_iris(return_X_y=True)
    >>> model = LogisticRegression(max_iter=1000).fit(x, y)
    >>> result = convert(model, x, repository=Path(tempfile.mkdtemp()), name="iris")
    >>> result.version, result.manifest.class_labels, result.report.passed
    (1, [0, 1, 2], True)
"""

from __future__ import annotations

from ._conversion import ConversionResult, convert
from ._importer import import_onnx
from ._parity import ParityReport, Tolerance, WorstRow

__all__ = ["ConversionResult", "ParityReport", "Tolerance", "WorstRow", "convert", "import_onnx"]
