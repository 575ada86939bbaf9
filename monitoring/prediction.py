"""A version's predictions under watch: the score's z (two-sided CUSUM) and each class's share.

The score is one number per row (``layout.row_scores``: the positive class's probability, the top one, or
a regressor's value); the label is compared as text. Both come from the profile's outputs, or else from
the first ``reference_size`` rows. The score's reference is the profile's exact mean, standard deviation
and histogram (``score_summary``, a regressor's ``value``); a profile written before those were stored
gives its class shares only, and the score takes its reference from the first requests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from sluice.converters.artifact.profile import ClassifierOutputs, Outputs, RegressorOutputs, ValueSummary
from sluice.monitoring.features import as_text
from sluice.monitoring.layout import Layout, Observation, WatchOptions, row_scores
from sluice.monitoring.reference import NumericReference
from sluice.monitoring.streams import (
    Alarm,
    Stream,
    mean_stream,
    rate_stream,
    reference_rate,
    share_p1,
    standardize,
)
from sluice.monitoring.windows import Window

#: A class with a larger share than this has no share stream (it has nowhere to rise to).
MAX_CLASS_SHARE = 0.995
_NO_OUTPUTS: dict[str, np.ndarray] = {}


class Predictions:
    """One chunk's predictions: scores and labels, each with the time of the request it came with."""

    def __init__(self, served: Sequence[Observation], served_at: np.ndarray, layout: Layout) -> None:
        self.score: np.ndarray | None = None
        self.label: np.ndarray | None = None
        self.score_at = self.label_at = np.empty(0)
        if layout.score_output is not None:
            arrays, ats = _gather(served, served_at, layout.score_output)
            if arrays:
                self.score = _joined(arrays, lambda v: row_scores(v, layout.score_is_probability))
                self.score_at = np.repeat(ats, [len(a) for a in arrays])
        if layout.label_output is not None:
            arrays, ats = _gather(served, served_at, layout.label_output)
            if arrays:
                arrays = [np.asarray(a) for a in arrays]
                kind = arrays[0].dtype
                if all(a.dtype == kind or (a.dtype.kind in "SUO" and kind.kind in "SUO") for a in arrays):
                    self.label = _joined(arrays, as_text)
                else:  # joined, they would be cast to one type first: True as "1", 1 as "1.0"
                    self.label = np.concatenate([as_text(a) for a in arrays])
                self.label_at = np.repeat(ats, [a.size for a in arrays])


class PredictionWatch:
    """The prediction streams of one version, once armed: the score's and one per class."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.reference_from = "first_requests"
        #: Where the score's reference came from (a profile without a score summary gives classes only).
        self.score_from = "first_requests"
        self.score_ref: NumericReference | None = None
        self.class_shares: dict[str, float] | None = None
        self.score: Stream | None = None
        self.classes: list[Stream] = []
        self.window: Window | None = None

    @staticmethod
    def planned(layout: Layout) -> int:
        """Detectors at most: the score's, and one per class label."""
        return (1 if layout.score_output else 0) + (len(layout.class_labels) if layout.label_output else 0)

    @staticmethod
    def profiled(outputs: Outputs | None) -> tuple[ValueSummary | None, dict[str, float] | None]:
        """The score summary and class shares a profile's outputs give (None for what they lack)."""
        if isinstance(outputs, ClassifierOutputs):
            return outputs.score_summary, dict(outputs.class_shares) or None
        if isinstance(outputs, RegressorOutputs):
            return outputs.value, None
        return None, None

    def streams(self) -> list[Stream]:
        return self.classes if self.score is None else [self.score, *self.classes]

    @property
    def wants_score(self) -> bool:
        """The version has a score and no reference for it yet (it is taken from the first requests)."""
        return self.layout.score_output is not None and self.score_ref is None

    @property
    def wants_classes(self) -> bool:
        return self.layout.label_output is not None and self.class_shares is None

    def arm_from_profile(self, outputs: Outputs | None, rows: int, arl: float, options: WatchOptions) -> None:
        summary, shares = self.profiled(outputs)
        score = None
        if summary is not None and self.layout.score_output:
            score = NumericReference.from_summary(summary, rows)
            self.score_from = "profile"
        if score is not None or shares:
            self.arm(score, shares, "profile", arl, options, rows)

    def arm(
        self,
        score: NumericReference | None,
        shares: dict[str, float] | None,
        source: str,
        arl: float,
        options: WatchOptions,
        rows: int = 0,
    ) -> None:
        """Arm what is given (a score reference, class shares estimated from ``rows``); keep the rest."""
        self.reference_from = source
        if score is not None:
            self.score_ref = score
            self.score = mean_stream("prediction", "prediction", score, arl)
            self.window = Window.numeric(score, options.window_rows)
        if shares and self.layout.label_output:
            self.class_shares = {str(k): float(v) for k, v in shares.items()}
            self.classes = []
            for label, p in self.class_shares.items():
                if 0.0 < p < MAX_CLASS_SHARE:
                    p0 = reference_rate(p, rows)
                    self.classes.append(
                        rate_stream("prediction", "prediction", "class", p0, share_p1(p0), arl, detail=label)
                    )

    def feed(self, got: Predictions) -> list[Alarm]:
        alarms: list[Alarm] = []
        if self.score is not None and got.score is not None and self.score_ref is not None:
            alarms += self.score.feed(standardize(got.score, self.score_ref), got.score_at)
        if got.label is not None:
            for stream in self.classes:
                alarms += stream.feed(got.label == stream.detail, got.label_at)
        if self.window is not None and got.score is not None:
            self.window.add_values(got.score)
        return alarms


def _gather(chunk: Sequence[Observation], ats: np.ndarray, output: str) -> tuple[list[Any], np.ndarray]:
    """The observations' arrays for ``output`` (where they have it) and the times (``ats``) they came at."""
    got = [(o.outputs or _NO_OUTPUTS).get(output) for o in chunk]
    has = [a is not None for a in got]
    if all(has):
        return got, ats
    return [a for a in got if a is not None], ats[has]


def _joined(arrays: list[Any], convert: Callable[[Any], np.ndarray]) -> np.ndarray:
    """``convert`` (row by row) applied to the arrays joined: once for the chunk, not once per request."""
    try:
        joined = np.concatenate(arrays)
    except (ValueError, TypeError):  # shapes or types that differ between requests
        return np.concatenate([convert(a) for a in arrays])
    return convert(joined)
