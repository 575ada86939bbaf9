"""The reference profile: a small summary of the sample a model was converted with, for drift detection.

Computed once, with float64 numpy statistics that ignore missing values (NaN). The manifest's
``profile`` object::

    {
      "rows": 569,                                   # rows in the sample
      "features": {
        "<feature name>": {
          "type": "numeric",
          "mean": 14.1, "std": 3.5, "min": 6.9, "max": 28.1,      # over the non-missing values
          "quantiles": {"0.01": q, "0.05": q, "0.25": q, "0.5": q, "0.75": q, "0.95": q, "0.99": q},
          "histogram": {"edges": [11 floats, min .. max], "counts": [10 ints]},
          "missing": 0.0                            # share of rows that are NaN
        }, ...
      },
      "outputs": {                                  # what the original model predicts on the sample
        # classifiers:
        "class_shares": {"<label>": share, ...},    # keys are str(label)
        "score": "positive_class_probability" | "max_probability",
        "score_quantiles": {"0.01": ..., ...}
        # regressors instead:
        "value": {"mean": ..., "std": ..., "quantiles": {...}}
      }
    }

The score of a binary classifier is the probability of its last class label (the positive class); of a
multiclass one, the largest probability (its confidence). A feature with no values at all has
``null`` statistics and ``missing`` 1.0. Standard deviations are population ones (``ddof=0``), as
numpy computes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
HISTOGRAM_BINS = 10


def _quantiles(values: np.ndarray) -> dict[str, float]:
    points = np.quantile(values, QUANTILES)
    return {str(q): float(v) for q, v in zip(QUANTILES, points, strict=True)}


def _feature(column: np.ndarray) -> dict[str, Any]:
    present = column[~np.isnan(column)]
    missing = 1.0 - present.size / column.size if column.size else 0.0
    if present.size == 0:
        return {
            "type": "numeric",
            "mean": None,
            "std": None,
            "min": None,
            "max": None,
            "quantiles": None,
            "histogram": None,
            "missing": missing,
        }
    counts, edges = np.histogram(present, bins=HISTOGRAM_BINS)
    return {
        "type": "numeric",
        "mean": float(present.mean()),
        "std": float(present.std()),
        "min": float(present.min()),
        "max": float(present.max()),
        "quantiles": _quantiles(present),
        "histogram": {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
        "missing": float(missing),
    }


def build_profile(
    sample: np.ndarray,
    feature_names: Sequence[str],
    *,
    labels: np.ndarray | None,
    scores: np.ndarray,
    class_labels: Sequence[Any] | None,
) -> dict[str, Any]:
    """The profile of ``sample`` (float64, one column per feature) and the original's outputs on it."""
    features = {name: _feature(sample[:, j]) for j, name in enumerate(feature_names)}
    outputs: dict[str, Any]
    if labels is not None and class_labels is not None:
        n = max(len(labels), 1)
        shares = {str(c): float(np.count_nonzero(labels == c) / n) for c in class_labels}
        probabilities = np.asarray(scores, dtype=np.float64).reshape(len(scores), -1)
        binary = probabilities.shape[1] == 2
        score = probabilities[:, -1] if binary else probabilities.max(axis=1)
        outputs = {
            "class_shares": shares,
            "score": "positive_class_probability" if binary else "max_probability",
            "score_quantiles": _quantiles(score),
        }
    else:
        values = np.asarray(scores, dtype=np.float64).ravel()
        values = values[~np.isnan(values)]
        outputs = {
            "value": {
                "mean": float(values.mean()),
                "std": float(values.std()),
                "quantiles": _quantiles(values),
            }
            if values.size
            else None
        }
    return {"rows": int(sample.shape[0]), "features": features, "outputs": outputs}
