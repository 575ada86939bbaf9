"""How a shadow's outputs are judged against the primary's: by what the model is for.

A shadow usually carries a *retrained* model, so "the same numbers" is the wrong question. ``mode: auto``
(the default) asks the question of the model's kind, read from the shadow version's manifest:

- a classifier (``task: classification``, or a ``label`` / ``probabilities`` output) is judged on its
  decision: the ``label`` output, else the argmax of ``probabilities``. A row disagrees when the
  decision differs. The score difference exported is |p_shadow - p_primary| of the primary's class.
- a regressor (``task: regression``, or a ``value`` output) is judged with a relative tolerance: a row
  disagrees when |shadow - primary| exceeds ``rtol`` (default ``DEFAULT_RTOL`` = 0.1) times the output's
  reference spread (the std of the prediction in the manifest's profile; without one, |primary|). The
  score difference exported is |shadow - primary| / spread.
- anything else: ``allclose`` with ``atol``.

``allclose`` (every element within ``atol``: the same model on a new runtime) and ``argmax`` stay explicit
choices. Rows are counted one by one: the ``shadow_disagreement`` gate is the share of compared rows that
disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sluice.converters.artifact.manifest import Manifest
from sluice.converters.artifact.profile import RegressorOutputs
from sluice.server.rollouts.spec import Compare

Outputs = dict[str, np.ndarray]
DEFAULT_RTOL = 0.1


@dataclass(frozen=True)
class Judge:
    """A resolved comparison: a concrete mode, the output it reads and the scale of its differences."""

    mode: str  # decision | relative | argmax | allclose | none
    output: str | None = None
    score: str | None = None  # a classifier's probabilities, for the score difference
    scale: float | None = None  # a regressor's reference spread (None: relative to |primary|)
    atol: float = 1e-4
    rtol: float = DEFAULT_RTOL


@dataclass(frozen=True)
class Score:
    """One compared request: rows, how many disagree, the largest |difference|, per-row score differences."""

    rows: int
    disagreements: int
    largest: float | None
    differences: np.ndarray

    @property
    def agree(self) -> bool:
        return self.disagreements == 0


def judge_for(spec: Compare, manifest: Manifest | None) -> Judge:
    """``spec`` made concrete for the version that ``manifest`` describes.

    >>> judge_for(Compare(), None).mode
    'allclose'
    """
    rtol = spec.rtol if spec.rtol is not None else DEFAULT_RTOL
    if spec.mode != "auto":
        mode = {"decision": "decision", "relative": "relative"}.get(spec.mode, spec.mode)
        return Judge(mode, spec.output, None, spec.scale, spec.atol, rtol)
    if manifest is None:
        return Judge("allclose", spec.output, None, None, spec.atol, rtol)
    label, probabilities = manifest.output_by_role("label"), manifest.output_by_role("probabilities")
    value = manifest.output_by_role("value")
    outputs = manifest.profile.outputs if manifest.profile is not None else None
    if manifest.task == "classification" or (value is None and (label or probabilities)):
        decided = spec.output or (label.name if label else probabilities.name if probabilities else None)
        score = probabilities.name if probabilities else None
        return Judge("decision", decided, score, None, spec.atol, rtol)
    if manifest.task == "regression" or value is not None:
        output = spec.output or (value.name if value else manifest.outputs[0].name)
        scale = spec.scale
        if scale is None and isinstance(outputs, RegressorOutputs) and outputs.value is not None:
            scale = outputs.value.std if outputs.value.std > 0 else None
        return Judge("relative", output, None, scale, spec.atol, rtol)
    return Judge("allclose", spec.output, None, None, spec.atol, rtol)


def _rows(a: np.ndarray) -> np.ndarray:
    """``a`` as (rows, elements); a scalar or 1-d output has one element per row."""
    return a.reshape(a.shape[0], -1) if a.ndim >= 1 and a.shape[0] else a.reshape(1, -1)


def compare(primary: Outputs, shadow: Outputs, judge: Judge) -> Score | None:
    """Judge one request's pair of outputs row by row; ``None`` when not compared (``mode: none``).

    >>> p, s = {"p": np.array([[0.9, 0.1], [0.2, 0.8]])}, {"p": np.array([[0.6, 0.4], [0.7, 0.3]])}
    >>> score = compare(p, s, Judge("decision", "p", "p"))
    >>> score.rows, score.disagreements, score.largest, score.differences.round(2).tolist()
    (2, 1, 0.5, [0.3, 0.5])
    >>> y, y2 = {"y": np.array([10.0, 20.0])}, {"y": np.array([10.5, 23.0])}
    >>> compare(y, y2, Judge("relative", "y", scale=10.0)).disagreements
    1
    """
    if judge.mode == "none":
        return None
    names = [judge.output] if judge.output else [n for n in primary if n in shadow]
    rows = next(
        (int(np.asarray(primary[n]).shape[0]) for n in names if n in primary and np.ndim(primary[n])), 1
    )
    bad = np.zeros(rows, dtype=bool)
    differences = np.zeros(0)
    largest: float | None = None
    for name in names:
        if name not in primary or name not in shadow:
            return Score(rows, rows, None, differences)
        a, b = np.asarray(primary[name]), np.asarray(shadow[name])
        if a.shape != b.shape:
            return Score(rows, rows, None, differences)
        a2, b2 = _rows(a), _rows(b)
        if a2.shape[0] != rows:
            return Score(rows, rows, None, differences)
        if a.dtype.kind not in "biuf" or b.dtype.kind not in "biuf":
            bad |= ~np.all(a2 == b2, axis=1)
            continue
        diff = np.abs(a2.astype(np.float64) - b2.astype(np.float64))
        row_diff = diff.max(axis=1) if diff.size else np.zeros(rows)
        largest = max(largest or 0.0, float(row_diff.max()) if row_diff.size else 0.0)
        if judge.mode in ("decision", "argmax") and a2.shape[1] > 1:
            decided = np.argmax(a2, axis=1)
            bad |= decided != np.argmax(b2, axis=1)
            differences = np.abs(a2[np.arange(rows), decided] - b2[np.arange(rows), decided]).astype(
                np.float64
            )
        elif judge.mode in ("decision", "argmax"):
            bad |= ~np.all(a2 == b2, axis=1)
        elif judge.mode == "relative":
            scale = judge.scale if judge.scale else np.maximum(np.abs(a2).max(axis=1), 1e-12)
            differences = row_diff / scale
            bad |= differences > judge.rtol
        else:
            bad |= row_diff > judge.atol
            differences = row_diff
    if judge.mode == "decision" and judge.score and judge.score != judge.output:
        p, s = primary.get(judge.score), shadow.get(judge.score)
        if p is not None and s is not None and np.shape(p) == np.shape(s) and np.ndim(p) == 2:
            a2, b2 = np.asarray(p, dtype=np.float64), np.asarray(s, dtype=np.float64)
            decided = np.argmax(a2, axis=1)
            differences = np.abs(a2[np.arange(len(a2)), decided] - b2[np.arange(len(b2)), decided])
    return Score(rows, int(bad.sum()), round(largest, 12) if largest is not None else None, differences)
