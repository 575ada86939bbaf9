"""The reference profile: a small summary of the sample a model was converted with, for drift detection.

Computed once, with float64 numpy statistics that ignore missing values (NaN), as a
``sluice.converters.artifact.profile.Profile``; the manifest's ``profile`` object is its JSON form::

    {
      "rows": 569,                                   # rows in the sample
      "features": {
        "<feature name>": {
          "type": "numeric",
          "mean": 14.1, "std": 3.5, "min": 6.9, "max": 28.1,      # over the non-missing values
          "quantiles": {"0.01": q, "0.05": q, "0.25": q, "0.5": q, "0.75": q, "0.95": q, "0.99": q},
          "histogram": {"edges": [11 floats, min .. max], "counts": [10 ints],
                        "atoms": {"values": [...], "counts": [...]}},   # point masses, if any
          "missing": 0.0                            # share of rows that are NaN
        },
        "<categorical feature>": {
          "type": "categorical",
          "categories": {"month": 0.55, "year": 0.3, ...},  # share of rows, the 50 most frequent
          "other": 0.0,                             # share of rows in rarer categories
          "distinct": 3,                            # how many categories the sample holds
          "missing": 0.0
        }, ...
      },
      "outputs": {                                  # what the original model predicts on the sample
        # classifiers:
        "class_shares": {"<label>": share, ...},    # keys are str(label)
        "score": "positive_class_probability" | "max_probability"
                 | "decision_function" | "max_decision_function",   # the last two: no predict_proba
        "score_quantiles": {"0.01": ..., ...},
        "score_summary": {"mean": ..., "std": ..., "quantiles": {...}, "histogram": {...}}
        # regressors instead:
        "value": {"mean": ..., "std": ..., "quantiles": {...}, "histogram": {...}}
      }
    }

The score of a binary classifier is the probability of its last class label (the positive class); of a
multiclass one, the largest probability (its confidence). A classifier without probabilities (SVC, a
hinge-loss SGDClassifier) is profiled on its decision function the same way. Categories are sorted by
share, most frequent first, ties by name. A feature with no values at all has
``null`` statistics and ``missing`` 1.0. Standard deviations are population ones (``ddof=0``), as
numpy computes them.

What the monitor needs is stored exactly, never left for it to interpolate: the score's (and a regressor's
value's) mean and standard deviation, and a histogram of ``SCORE_BINS`` equal-mass bins
(``ValueSummary.of``). Values that at least ``ATOM_SHARE`` of the rows hold exactly (a probability of
exactly 0 or 1, a 0/1 feature) are listed as ``atoms``, so a replay draws them as the point masses they
are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .artifact.profile import (
    CategoricalFeature,
    ClassifierOutputs,
    Histogram,
    NumericFeature,
    Outputs,
    Profile,
    RegressorOutputs,
    ValueSummary,
)

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
HISTOGRAM_BINS = 10
#: Categories listed per categorical feature; rarer ones are summed into "other".
MAX_CATEGORIES = 50


def _quantiles(values: np.ndarray) -> dict[str, float]:
    points = np.quantile(values, QUANTILES)
    return {str(q): float(v) for q, v in zip(QUANTILES, points, strict=True)}


def _feature(column: np.ndarray) -> NumericFeature:
    present = column[~np.isnan(column)]
    missing = 1.0 - present.size / column.size if column.size else 0.0
    if present.size == 0:
        return NumericFeature(missing=missing)
    return NumericFeature(
        mean=float(present.mean()),
        std=float(present.std()),
        min=float(present.min()),
        max=float(present.max()),
        quantiles=_quantiles(present),
        histogram=Histogram.of(present, HISTOGRAM_BINS),
        missing=float(missing),
    )


def _categorical(column: np.ndarray) -> CategoricalFeature:
    values, counts = np.unique(column.astype(str), return_counts=True)
    order = sorted(range(len(values)), key=lambda i: (-counts[i], str(values[i])))
    n = max(len(column), 1)
    top = order[:MAX_CATEGORIES]
    return CategoricalFeature(
        categories={str(values[i]): float(counts[i] / n) for i in top},
        other=float(sum(counts[i] for i in order[MAX_CATEGORIES:]) / n),
        distinct=len(values),
        missing=0.0,  # categorical samples with missing values are refused before profiling
    )


def _outputs(
    labels: np.ndarray | None, scores: np.ndarray, class_labels: Sequence[Any] | None, probabilities: bool
) -> Outputs:
    if labels is not None and class_labels is not None:
        n = max(len(labels), 1)
        shares = {str(c): float(np.count_nonzero(labels == c) / n) for c in class_labels}
        table = np.asarray(scores, dtype=np.float64).reshape(len(scores), -1)
        one = table.shape[1] <= 2
        score = table[:, -1] if one else table.max(axis=1)
        if probabilities:
            kind = "positive_class_probability" if one else "max_probability"
        else:
            kind = "decision_function" if one else "max_decision_function"
        score = score[np.isfinite(score)]
        if not score.size:
            return ClassifierOutputs(shares, kind)
        return ClassifierOutputs(shares, kind, _quantiles(score), ValueSummary.of(score, _quantiles(score)))
    values = np.asarray(scores, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if not values.size:
        return RegressorOutputs(None)
    return RegressorOutputs(ValueSummary.of(values, _quantiles(values)))


#: A sample with fewer rows than this gives a reference too uncertain to monitor well (a warning says so).
MIN_MONITORING_ROWS = 1000


def small_sample_warning(profile: Profile | None) -> list[str]:
    """One warning line when ``profile`` rests on fewer than ``MIN_MONITORING_ROWS`` rows, else none.

    The monitor widens its detectors' allowances by about ``25 / rows`` standard deviations for such a
    reference (``sluice.monitoring.streams.widening``), so that its false alarms stay within budget; the
    line says what that costs.

    >>> small_sample_warning(Profile({}, None, rows=100))[0][:60]
    'the sample has 100 rows, too few to monitor drift well: the '
    """
    if profile is None or profile.rows >= MIN_MONITORING_ROWS:
        return []
    shift = 2.0 * (0.25 + 25.0 / max(profile.rows, 1))
    return [
        f"the sample has {profile.rows} rows, too few to monitor drift well: the reference's means and "
        f"shares are that uncertain, so the detectors allow for it and a mean shift under about "
        f"{shift:.1f} standard deviations goes unnoticed for long; convert with "
        f"{MIN_MONITORING_ROWS:,}+ rows to watch for 0.5"
    ]


def build_profile(
    sample: np.ndarray | Sequence[np.ndarray],
    feature_names: Sequence[str],
    *,
    labels: np.ndarray | None,
    scores: np.ndarray,
    class_labels: Sequence[Any] | None,
    categorical: Sequence[str] = (),
    probabilities: bool = True,
) -> Profile:
    """The profile of ``sample`` and the original's outputs on it.

    ``sample`` is a float64 matrix (one column per feature) or a list of columns; the features named in
    ``categorical`` hold strings. ``probabilities`` is False when ``scores`` are decision scores.
    """
    columns = [sample[:, j] for j in range(sample.shape[1])] if isinstance(sample, np.ndarray) else sample
    features = {
        name: _categorical(col) if name in categorical else _feature(np.asarray(col, dtype=np.float64))
        for name, col in zip(feature_names, columns, strict=True)
    }
    rows = len(columns[0]) if len(columns) else 0
    return Profile(features, _outputs(labels, scores, class_labels, probabilities), int(rows))
