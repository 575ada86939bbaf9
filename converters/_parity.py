"""Parity between a framework model and its ONNX graph: tolerances, the measured report, the verdict.

Both run on the same rows; the original sees the sample as given (float64), the ONNX graph sees what a
client would send it (the sample cast to the graph's input type), so input rounding is part of what is
measured.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    """How far an ONNX graph may stray from the model it came from.

    ``max_abs_diff_proba``: largest allowed |difference| of any class probability.
    ``max_abs_diff_value_rel``: largest allowed |difference| of a regression output (or of a decision
    score, for a classifier without probabilities), divided by the
    spread (std) of the original's outputs on the sample, so a model predicting prices in millions and
    one predicting rates in [0, 1] are held to the same standard.
    ``min_label_agreement``: share of rows whose predicted class must match. It is below 1.0 on purpose:
    float32 arithmetic rounds scores by about 1e-7, and a row whose classes tie within that margin
    (exactly on the decision boundary) can legitimately flip, so one flip in 1,000 rows is tolerated.
    """

    max_abs_diff_proba: float = 1e-4
    max_abs_diff_value_rel: float = 1e-4
    min_label_agreement: float = 0.999


@dataclass
class WorstRow:
    """One of the rows where the graph strays most: index into the caller's sample, and both outputs."""

    row: int
    original: Any
    onnx: Any
    abs_diff: float


@dataclass
class ParityReport:
    """What was measured: ``compared`` is "probabilities", "scores" or "value"; ``precision``: graph input."""

    rows: int
    compared: str
    precision: str
    label_agreement: float | None
    max_abs_diff: float
    mean_abs_diff: float
    scale: float | None
    max_rel_diff: float | None
    tolerance: Tolerance
    passed: bool
    failures: list[str] = field(default_factory=list)
    worst: list[WorstRow] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The manifest's ``parity`` object (worst rows left out: a passing report has none worth keeping)."""
        body = asdict(self)
        body.pop("worst")
        return body

    def table(self) -> str:
        """A short human table, as the CLI prints it."""
        lines = [
            f"parity on {self.rows} rows ({self.precision} graph)",
            f"{'check':<28}{'measured':>12}  limit",
        ]
        tol = self.tolerance
        if self.label_agreement is not None:
            lines.append(
                f"{'label agreement':<28}{self.label_agreement:>12.4f}  >= {tol.min_label_agreement}"
            )
        lines.append(
            f"{'max |diff| ' + self.compared:<28}{self.max_abs_diff:>12.3g}"
            + (f"  <= {tol.max_abs_diff_proba:g}" if self.compared == "probabilities" else "")
        )
        lines.append(f"{'mean |diff| ' + self.compared:<28}{self.mean_abs_diff:>12.3g}")
        if self.max_rel_diff is not None:
            lines.append(
                f"{'max |diff| / std':<28}{self.max_rel_diff:>12.3g}  <= {tol.max_abs_diff_value_rel:g}"
            )
        lines.append(f"{'result':<28}{'passed' if self.passed else 'FAILED':>12}")
        return "\n".join(lines)

    def worst_text(self) -> str:
        return "; ".join(f"row {w.row}: original {w.original} vs onnx {w.onnx}" for w in self.worst)


def _abs_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # NaN on both sides agrees; NaN on one side is as bad as it gets.
    diff = np.abs(a - b)
    both = np.isnan(a) & np.isnan(b)
    return np.where(both, 0.0, np.where(np.isnan(diff), np.inf, diff))


def _rounded(values: np.ndarray) -> Any:
    flat = [float(f"{v:.10g}") for v in np.ravel(values)]
    return flat[0] if len(flat) == 1 else flat


def compare(
    *,
    rows: np.ndarray,
    labels: np.ndarray | None,
    scores: np.ndarray,
    onnx_labels: np.ndarray | None,
    onnx_scores: np.ndarray,
    precision: str,
    tolerance: Tolerance,
    n_worst: int = 5,
    compared: str | None = None,
) -> ParityReport:
    """Measure original (``labels``, ``scores``) against ONNX outputs; ``rows`` maps each to a sample row.

    ``compared`` is "probabilities" (the default with labels: absolute tolerance), "scores" (a
    classifier's decision function: unbounded, so held to the relative tolerance like a value) or
    "value" (the default without labels).
    """
    compared = compared or ("probabilities" if labels is not None else "value")
    n = len(scores)
    ours = np.asarray(scores, dtype=np.float64).reshape(n, -1)
    theirs = np.asarray(onnx_scores, dtype=np.float64).reshape(n, -1)
    if ours.shape != theirs.shape:
        raise ValueError(f"ONNX output shape {theirs.shape} does not match the model's {ours.shape}")
    per_row = _abs_diff(ours, theirs).max(axis=1)
    failures: list[str] = []
    agreement: float | None = None
    scale: float | None = None
    rel: float | None = None
    max_diff, mean_diff = float(per_row.max()), float(per_row.mean())
    badness = per_row.copy()
    if labels is not None:
        same = np.asarray(labels) == np.asarray(onnx_labels)
        agreement = float(same.mean())
        badness[~same] = np.inf  # a flipped label is worse than any probability difference
        if agreement < tolerance.min_label_agreement:
            failures.append(f"label agreement {agreement:.4f} < {tolerance.min_label_agreement}")
    if compared == "probabilities":
        if not max_diff <= tolerance.max_abs_diff_proba:
            failures.append(f"max |diff| of probabilities {max_diff:.3g} > {tolerance.max_abs_diff_proba:g}")
    else:
        finite = ours[np.isfinite(ours)]
        spread = float(finite.std()) if finite.size else 0.0
        # A constant model has no spread; fall back to its magnitude so the check stays meaningful.
        scale = spread if spread > 0 else max(float(np.abs(finite).max(initial=0.0)), 1.0)
        rel = max_diff / scale
        if not rel <= tolerance.max_abs_diff_value_rel:
            failures.append(
                f"max |diff| / std of {compared} {rel:.3g} > {tolerance.max_abs_diff_value_rel:g}"
            )
    order: list[int] = []
    seen: set[int] = set()
    for i in np.argsort(-badness, kind="stable"):
        # A resampled sample repeats rows; show each sample row once.
        if int(rows[i]) not in seen:
            seen.add(int(rows[i]))
            order.append(int(i))
        if len(order) == n_worst:
            break
    worst = [
        WorstRow(
            row=int(rows[i]),
            original=_rounded(ours[i]),
            onnx=_rounded(theirs[i]),
            abs_diff=float(per_row[i]),
        )
        for i in order
    ]
    if labels is not None and onnx_labels is not None:
        for w, i in zip(worst, order, strict=True):
            w.original = {"label": _plain(labels[i]), compared: w.original}
            w.onnx = {"label": _plain(onnx_labels[i]), compared: w.onnx}
    return ParityReport(
        rows=n,
        compared=compared,
        precision=precision,
        label_agreement=agreement,
        max_abs_diff=max_diff,
        mean_abs_diff=mean_diff,
        scale=scale,
        max_rel_diff=rel,
        tolerance=tolerance,
        passed=not failures,
        failures=failures,
        worst=worst,
    )


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
