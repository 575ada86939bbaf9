"""References as the detectors need them: exact score moments and point masses; thresholds that allow for
a reference estimated from few rows (issue 13: a bimodal score raised 105 alarms per 100k, a 170-row
reference 4 in 114 rows)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from sluice.converters._profile import build_profile
from sluice.converters.artifact.profile import ClassifierOutputs, Profile
from sluice.monitoring.features import CategoricalDetectors
from sluice.monitoring.layout import Layout, Observation, WatchOptions
from sluice.monitoring.reference import CategoricalReference, NumericReference
from sluice.monitoring.streams import mean_stream, standardize, variance_stream
from sluice.monitoring.version import VersionMonitor

LAYOUT = Layout.from_signature(
    [("x", "FP32", (-1, 2), ("a", "b"))],
    [("label", "label"), ("probabilities", "probabilities")],
    [0, 1],
)


def _bimodal(rng: np.random.Generator, n: int) -> np.ndarray:
    """Most rows near 0, 7 % near 1, 5 % exactly 0: a fraud model's score."""
    positive = rng.random(n) < 0.07
    s = np.where(positive, rng.beta(20, 1.5, n), rng.beta(0.3, 12, n))
    s[rng.random(n) < 0.05] = 0.0
    return s


def _profile(rng: np.random.Generator, rows: int) -> Profile:
    s = _bimodal(rng, rows)
    return build_profile(
        rng.normal(size=(rows, 2)),
        ["a", "b"],
        labels=(s > 0.5).astype(np.int64),
        scores=np.stack([1 - s, s], axis=1),
        class_labels=[0, 1],
    )


def test_the_profile_stores_the_scores_exact_moments_and_point_masses() -> None:
    rng = np.random.default_rng(0)
    s = _bimodal(np.random.default_rng(0), 3000)
    outputs = _profile(rng, 3000).outputs
    assert isinstance(outputs, ClassifierOutputs) and outputs.score_summary is not None
    summary = outputs.score_summary
    assert summary.mean == pytest.approx(s.mean()) and summary.std == pytest.approx(s.std())
    assert summary.histogram is not None and summary.histogram.atoms == (0.0,)
    # The replay draws the point mass as a point, in its share.
    ref = NumericReference.from_summary(summary)
    draws = ref.draw(np.random.default_rng(1), 100_000)
    share = summary.histogram.atom_counts[0] / 3000
    assert np.mean(draws == draws.min()) == pytest.approx(share, abs=0.01)


def test_a_bimodal_score_raises_no_false_alarms_on_stable_rows() -> None:
    """The profile's 20,000-row replay used to put the mean at 0.150 against 0.0716: 52 alarms per 100k."""
    alarms = rows = 0
    for seed in range(3):
        rng = np.random.default_rng(seed)
        outputs = _profile(rng, 3000).outputs
        assert isinstance(outputs, ClassifierOutputs) and outputs.score_summary is not None
        ref = NumericReference.from_summary(outputs.score_summary, 3000)
        stream = mean_stream("prediction", "prediction", ref, 100_000)
        live = _bimodal(rng, 200_000)
        alarms += len(stream.detector.update_many(standardize(live, ref)))  # type: ignore[attr-defined]
        rows += live.size
    assert alarms / rows * 1e5 <= 1.0


def test_a_profile_without_a_score_summary_watches_the_score_from_the_first_requests() -> None:
    rng = np.random.default_rng(3)
    body = _profile(rng, 500).to_json()
    del body["outputs"]["score_summary"]  # as written before the summary was stored
    old = Profile.from_json(body)
    vm = VersionMonitor("m", 1, LAYOUT, old, WatchOptions(reference_size=200))
    s = _bimodal(rng, 400)
    probabilities = np.stack([1 - s, s], axis=1)
    chunk = [
        Observation(
            {"x": rng.normal(size=(10, 2))},
            {"probabilities": probabilities[i : i + 10], "label": (s[i : i + 10] > 0.5).astype(np.int64)},
            0.001 * (1 + i % 7),
            False,
            float(i),
        )
        for i in range(0, 400, 10)
    ]
    vm.feed(chunk)
    prediction = vm.snapshot(40.0)["prediction"]
    assert prediction["reference_from"] == "profile"  # the class shares
    assert prediction["score_reference_from"] == "first_requests"
    assert prediction["reference"]["score"]["mean"] == pytest.approx(s.mean())  # the first chunk, whole


@pytest.mark.parametrize("rows", [100, 170, 1000])
def test_a_small_reference_keeps_the_false_alarm_budget(rows: int) -> None:
    """Over 10 references of ``rows`` rows, each followed by 200,000 stable rows: <= 1 per 100k per
    detector on average (0.5 expected: calibration keeps a 2x margin); without the widening 100 rows
    gave 47 (mean) and 129 (variance)."""
    alarms = {"mean": 0, "variance": 0}
    for seed in range(10):
        rng = np.random.default_rng(seed)
        ref = NumericReference.from_values(rng.normal(size=rows))
        assert ref is not None
        ref = dataclasses.replace(ref, values=None)  # replayed from its histogram, as a profile is
        z = standardize(rng.normal(size=200_000), ref)
        mean, variance = mean_stream("drift", "x", ref, 100_000), variance_stream("x", ref, 100_000)
        alarms["mean"] += len(mean.detector.update_many(z))  # type: ignore[attr-defined]
        alarms["variance"] += len(variance.detector.update_many(z * z))  # type: ignore[attr-defined]
    assert {k: v / 20 for k, v in alarms.items()} == {k: pytest.approx(0.5, abs=0.75) for k in alarms}


def test_the_widening_fades_as_the_reference_grows() -> None:
    rng = np.random.default_rng(0)
    k = {}
    for rows in (100, 100_000):
        ref = NumericReference.from_values(rng.normal(size=rows))
        assert ref is not None
        k[rows] = mean_stream("drift", "x", ref, 100_000).detector.k  # type: ignore[attr-defined]
    assert k[100] > 0.4 and k[100_000] == pytest.approx(0.25, abs=0.002)


def test_shares_from_a_small_reference_keep_the_false_alarm_budget() -> None:
    shares = {"a": 0.3, "b": 0.3, "c": 0.25, "d": 0.146, "e": 0.004}
    keys = np.array(list(shares), dtype=object)
    p = np.array(list(shares.values()))
    alarms = streams = 0
    for seed in range(10):
        rng = np.random.default_rng(seed)
        ref = CategoricalReference.from_values(keys[rng.choice(5, 100, p=p)])
        detectors = CategoricalDetectors.build("c", ref, 100_000)
        bins = np.array([detectors.bins.get(v, -1) for v in keys[rng.choice(5, 200_000, p=p)]])
        for j, stream in enumerate(detectors.shares):
            alarms += len(stream.detector.update_many(bins == j))  # type: ignore[attr-defined]
        alarms += len(detectors.unseen.detector.update_many(bins < 0))  # type: ignore[attr-defined]
        streams += len(detectors.streams())
    assert alarms / streams / 2 <= 1.0


def test_the_converter_warns_when_the_sample_is_too_small_to_monitor_well(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    from sluice.converters import convert

    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 3))
    model = LogisticRegression().fit(x, x[:, 0] > 0)
    small = convert(model, x, repository=tmp_path, name="small")
    assert [w for w in small.warnings if "150 rows, too few to monitor drift well" in w]
    x = rng.normal(size=(1500, 3))
    large = convert(model, x, repository=tmp_path, name="large")
    assert not [w for w in large.warnings if "monitor" in w]


def test_a_profile_written_before_summaries_and_atoms_reads_and_writes_unchanged() -> None:
    body = {
        "rows": 10,
        "features": {
            "a": {
                "type": "numeric", "mean": 0.5, "std": 0.5, "min": 0.0, "max": 1.0,
                "quantiles": {"0.5": 0.5}, "histogram": {"edges": [0.0, 0.5, 1.0], "counts": [5, 5]},
                "missing": 0.0,
            }
        },
        "outputs": {"class_shares": {"0": 0.5, "1": 0.5}, "score": "positive_class_probability",
                    "score_quantiles": {"0.5": 0.4}},
    }  # fmt: skip
    profile = Profile.from_json(body)
    assert isinstance(profile.outputs, ClassifierOutputs) and profile.outputs.score_summary is None
    assert profile.to_json() == body


def test_a_feature_constant_in_the_reference_is_not_watched() -> None:
    """Digits' border pixels: 0 in every reference row; a z-score has no scale and alarmed for ever."""
    rng = np.random.default_rng(9)
    x = rng.normal(size=(500, 2))
    x[:, 1] = 0.0
    s = _bimodal(rng, 500)
    profile = build_profile(
        x,
        ["a", "b"],
        labels=(s > 0.5).astype(np.int64),
        scores=np.stack([1 - s, s], axis=1),
        class_labels=[0, 1],
    )
    vm = VersionMonitor("m", 1, LAYOUT, profile, WatchOptions())
    live = rng.normal(size=(2000, 2))
    live[:, 1] = (rng.random(2000) < 0.01) * 3.0
    s = _bimodal(rng, 2000)
    obs = [
        Observation(
            {"x": live[i : i + 10]},
            {"probabilities": np.stack([1 - s[i : i + 10], s[i : i + 10]], axis=1)},
            0.001,
            False,
            float(i),
        )
        for i in range(0, 2000, 10)
    ]
    assert [a for a in vm.feed(obs) if a.stream.subject == "b"] == []
    assert vm.snapshot(2000.0)["features"]["b"]["detectors"] == []
    assert len(vm.snapshot(2000.0)["features"]["a"]["detectors"]) == 2
