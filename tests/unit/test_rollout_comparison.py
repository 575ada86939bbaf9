"""Shadow comparisons judged by the model's kind (manifest), row by row, with the score difference."""

from __future__ import annotations

import numpy as np

from sluice.converters.artifact.manifest import Manifest, TensorSpec
from sluice.converters.artifact.profile import Profile, RegressorOutputs, ValueSummary
from sluice.server.rollouts.comparison import DEFAULT_RTOL, compare, judge_for
from sluice.server.rollouts.gates import GateWindow
from sluice.server.rollouts.spec import Compare

CLASSIFIER = Manifest(
    inputs=[TensorSpec("input", "FP32", (-1, 4))],
    outputs=[
        TensorSpec("label", "INT64", (-1,), role="label"),
        TensorSpec("probabilities", "FP32", (-1, 2), role="probabilities"),
    ],
    task="classification",
    class_labels=[0, 1],
)


def regressor(std: float | None) -> Manifest:
    profile = None
    if std is not None:
        profile = Profile({}, RegressorOutputs(ValueSummary(mean=50.0, std=std, quantiles={})), rows=100)
    return Manifest(
        inputs=[TensorSpec("input", "FP32", (-1, 4))],
        outputs=[TensorSpec("variable", "FP32", (-1, 1), role="value")],
        task="regression",
        profile=profile,
    )


def retrained_classifier(rng: np.random.Generator, rows: int) -> tuple[dict[str, np.ndarray], ...]:
    """Stable and a retrained candidate: scores move by a few points, labels flip on ~1 % of rows."""
    p = rng.uniform(0, 1, rows)
    q = np.clip(p + rng.normal(0, 0.02, rows), 0, 1)
    primary = {"label": (p > 0.5).astype(np.int64), "probabilities": np.stack([1 - p, p], axis=1)}
    shadow = {"label": (q > 0.5).astype(np.int64), "probabilities": np.stack([1 - q, q], axis=1)}
    return primary, shadow


def test_a_retrained_classifier_is_judged_on_its_decision_not_its_scores() -> None:
    primary, shadow = retrained_classifier(np.random.default_rng(7), 2000)
    judge = judge_for(Compare(), CLASSIFIER)
    assert (judge.mode, judge.output, judge.score) == ("decision", "label", "probabilities")
    by_decision = compare(primary, shadow, judge)
    assert by_decision is not None and by_decision.rows == 2000
    assert by_decision.disagreements / 2000 < 0.05  # the labels barely move
    strict = compare(primary, shadow, judge_for(Compare(mode="allclose"), CLASSIFIER))
    assert strict is not None and strict.disagreements / 2000 > 0.8  # what the old default said
    assert (
        by_decision.differences.shape == (2000,) and 0.005 < float(np.median(by_decision.differences)) < 0.03
    )


def test_a_classifier_without_a_label_output_compares_the_argmax() -> None:
    manifest = Manifest(
        inputs=CLASSIFIER.inputs, outputs=[CLASSIFIER.outputs[1]], task="classification", class_labels=[0, 1]
    )
    judge = judge_for(Compare(), manifest)
    scored = compare(
        {"probabilities": np.array([[0.9, 0.1], [0.4, 0.6]])},
        {"probabilities": np.array([[0.8, 0.2], [0.6, 0.4]])},
        judge,
    )
    assert scored is not None and (scored.rows, scored.disagreements) == (2, 1)


def test_a_regressor_is_judged_relative_to_its_reference_spread() -> None:
    judge = judge_for(Compare(), regressor(std=20.0))
    assert (judge.mode, judge.output, judge.scale, judge.rtol) == ("relative", "variable", 20.0, DEFAULT_RTOL)
    primary = {"variable": np.array([[10.0], [50.0], [90.0]])}
    shadow = {"variable": np.array([[11.0], [53.9], [80.0]])}  # 0.05, 0.195, 0.5 of the spread
    scored = compare(primary, shadow, judge)
    assert scored is not None and scored.disagreements == 2
    assert scored.differences.round(3).tolist() == [0.05, 0.195, 0.5]
    # Without a profile, the tolerance is relative to the primary's own value.
    loose = compare(primary, shadow, judge_for(Compare(), regressor(std=None)))
    assert loose is not None and loose.disagreements == 1  # 10 %, 7.8 %, 11.1 %: only the last is over
    # allclose stays an explicit choice
    assert judge_for(Compare(mode="allclose", atol=0.5), regressor(20.0)).mode == "allclose"


def test_unknown_kind_falls_back_to_allclose_and_none_compares_nothing() -> None:
    assert judge_for(Compare(), None).mode == "allclose"
    assert compare({"y": np.ones(2)}, {"y": np.ones(2)}, judge_for(Compare(mode="none"), None)) is None


def test_a_window_counts_compared_rows() -> None:
    window = GateWindow()
    window.compared(1.0, rows=100, disagreements=3)
    window.compared(2.0, agree=False)
    stats = window.stats(2.0, 10.0)
    assert (stats.compared, stats.disagreements) == (101, 4)
