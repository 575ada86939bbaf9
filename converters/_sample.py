"""The sample a model is converted with: named columns, each numeric (float64) or categorical (strings).

A sample arrives as a 2-D array, a DataFrame, or a mapping of column name -> values (what the CLI reads
from a CSV). It is checked against the model's features once, then handed out three ways: as the
original model wants it (a DataFrame when it was fitted on one, else an array), as ONNX feeds (one
matrix input, or one ``[-1, 1]`` input per column), and column by column for the reference profile.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sluice.converters.artifact.errors import ConversionError

from ._framework import short_cause

NUMERIC, CATEGORICAL = "numeric", "categorical"


def _is_frame(value: Any) -> bool:
    # A DataFrame, recognised without importing pandas.
    return hasattr(value, "to_numpy") and hasattr(value, "columns") and hasattr(value, "iloc")


def _column(name: str, values: Any) -> tuple[np.ndarray, str]:
    raw = np.asarray(values.to_numpy() if hasattr(values, "to_numpy") else values)
    if raw.ndim != 1:
        raise ConversionError(f"sample column {name!r} must be 1-D, got shape {list(raw.shape)}")
    if raw.dtype.kind in "biuf":
        return raw.astype(np.float64), NUMERIC
    try:
        return raw.astype(np.float64), NUMERIC
    except (TypeError, ValueError):
        pass
    out = np.empty(len(raw), dtype=object)
    for i, v in enumerate(raw):
        if v is None or (isinstance(v, float) and np.isnan(v)) or type(v).__name__ == "NAType":
            raise ConversionError(
                f"categorical column {name!r} has a missing value at row {i}: ONNX string inputs cannot "
                "carry one; fill it (e.g. with 'missing') before training and converting"
            )
        out[i] = str(v)
    return out, CATEGORICAL


@dataclass
class Sample:
    """Checked sample columns in the model's feature order; ``named`` selects one input per column."""

    names: list[str]
    columns: list[np.ndarray]
    kinds: list[str]
    named: bool
    wants_frame: bool

    @property
    def rows(self) -> int:
        return len(self.columns[0])

    def model_input(self, rows: np.ndarray | None = None) -> Any:
        """Rows as the original model takes them: a DataFrame if it was fitted on one, else an array."""
        picked = [c if rows is None else c[rows] for c in self.columns]
        if self.wants_frame:
            try:
                import pandas as pd
            except ImportError as exc:
                if self.named:
                    raise ConversionError(
                        "the model was fitted on a DataFrame: pandas is needed to run it"
                    ) from exc
            else:
                return pd.DataFrame(dict(zip(self.names, picked, strict=True)))
        if all(k == NUMERIC for k in self.kinds):
            return np.column_stack(picked)
        return np.column_stack([c.astype(object) for c in picked])

    def matrix(self) -> np.ndarray:
        """All columns as one float64 matrix (numeric samples only)."""
        return np.column_stack(self.columns)

    def feeds(self, rows: np.ndarray, precision: str, input_names: Sequence[str]) -> dict[str, np.ndarray]:
        """ONNX feeds for ``rows``: numeric in ``precision``, categorical as strings."""
        dtype = np.float64 if precision == "float64" else np.float32
        if not self.named:
            return {input_names[0]: np.ascontiguousarray(self.matrix()[rows], dtype=dtype)}
        return {
            name: (col[rows] if kind == CATEGORICAL else col[rows].astype(dtype)).reshape(-1, 1)
            for name, col, kind in zip(input_names, self.columns, self.kinds, strict=True)
        }


def _mismatch(have: Sequence[str], want: Sequence[str]) -> ConversionError:
    missing = [n for n in want if n not in have]
    extra = [n for n in have if n not in want]
    parts = []
    if missing:
        parts.append(f"lacks the model's feature(s) {', '.join(map(repr, missing))}")
    if extra:
        parts.append(f"has column(s) the model does not take: {', '.join(map(repr, extra))}")
    return ConversionError(
        f"the sample {' and '.join(parts)}; the model's features are {', '.join(map(repr, want))}",
        details={"missing": missing, "unexpected": extra},
    )


def load(
    sample: Any,
    *,
    n_features: int,
    names_in: Sequence[str] | None,
    given_names: Sequence[str] | None,
    per_column_inputs: bool,
) -> Sample:
    """Check ``sample`` against the model (``n_features``, ``names_in`` = its ``feature_names_in_``)."""
    if _is_frame(sample) or isinstance(sample, Mapping):
        items = sample.items() if isinstance(sample, Mapping) else ((c, sample[c]) for c in sample.columns)
        table = {str(k): v for k, v in items}
        if names_in is not None:
            if set(table) != set(names_in) or len(table) != len(names_in):
                raise _mismatch(list(table), names_in)
            names = list(names_in)  # the model's order: a reordered sample is laid out by name
        else:
            names = list(given_names) if given_names is not None else list(table)
            if len(table) != n_features:
                raise ConversionError(
                    f"the sample has {len(table)} columns but the model takes {n_features} features"
                )
        keys = list(names_in) if names_in is not None else list(table)
        pairs = [_column(n, table[k]) for n, k in zip(names, keys, strict=True)]
    else:
        try:
            array = np.asarray(sample)
        except (TypeError, ValueError) as exc:
            raise ConversionError(f"the sample is not a table of values: {short_cause(exc)}") from exc
        if array.ndim != 2:
            raise ConversionError(
                f"the sample must be a 2-D array (rows x features), got {array.ndim} dimension(s)"
            )
        if array.shape[1] != n_features:
            raise ConversionError(
                f"the sample has {array.shape[1]} columns but the model takes {n_features} features"
            )
        names = list(given_names or names_in or [f"f{i}" for i in range(n_features)])
        pairs = [_column(n, array[:, j]) for j, n in enumerate(names)]
    if len(names) != n_features:
        raise ConversionError(f"{len(names)} feature names given but the model takes {n_features} features")
    if len(set(names)) != len(names):
        raise ConversionError("feature names must be unique")
    columns, kinds = [c for c, _ in pairs], [k for _, k in pairs]
    if not columns or len(columns[0]) == 0:
        raise ConversionError("the sample has no rows")
    if CATEGORICAL in kinds and names_in is None:
        raise ConversionError(
            "the sample has string columns but the model was not fitted on a DataFrame: fit it on a "
            "DataFrame (with a ColumnTransformer) so each column can be served as a named input"
        )
    named = CATEGORICAL in kinds or (per_column_inputs and names_in is not None)
    return Sample(names, columns, kinds, named=named, wants_frame=names_in is not None)
