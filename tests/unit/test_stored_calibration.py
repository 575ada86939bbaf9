"""Calibration once, at conversion: ``sluice convert`` stores the monitor's pilots in the profile, the
gateway trusts them at load when their key matches, and replays otherwise (issue 13: 14 models took 50 s
to become ready, most of it calibration)."""

from __future__ import annotations

import csv

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from sluice.converters.artifact.manifest import Manifest
from sluice.converters.artifact.profile import Profile
from sluice.monitoring.calibration import Pilot
from sluice.monitoring.layout import Layout, WatchOptions
from sluice.monitoring.stored import calibrate_profile, calibration_key
from sluice.monitoring.version import VersionMonitor
from sluice.server.cli import main


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    """A model converted by ``sluice convert`` (the command, as a user runs it)."""
    tmp = tmp_path_factory.mktemp("convert")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1200, 4))
    joblib.dump(LogisticRegression().fit(x, x[:, 0] + rng.normal(size=1200) > 0), tmp / "model.joblib")
    with open(tmp / "sample.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["a", "b", "c", "d"])
        writer.writerows(x.tolist())
    argv = ["convert", str(tmp / "model.joblib"), "--sample", str(tmp / "sample.csv")]
    assert main([*argv, "--repository", str(tmp / "repo"), "--name", "m"]) == 0
    return Manifest.read(tmp / "repo" / "m" / "1")


def _monitor(profile: Profile | None, target: float = 10.0) -> VersionMonitor:
    layout = Layout.from_signature(
        [("input", "FP32", (-1, 4), ("a", "b", "c", "d"))],
        [("label", "label"), ("probabilities", "probabilities")],
        [False, True],
    )
    vm = VersionMonitor("m", 1, layout, profile, WatchOptions(target_false_alarms_per_100k=target))
    vm.start()
    return vm


def test_sluice_convert_stores_the_monitors_calibration_keyed_by_its_settings(converted: Manifest) -> None:
    profile = converted.profile
    assert profile is not None and profile.calibration is not None
    assert profile.calibration["key"] == calibration_key()
    assert sorted(profile.calibration["features"]) == ["a", "b", "c", "d"]
    assert profile.calibration["score"] is not None
    # The stored pilots are what a replay at load measures: the same thresholds either way.
    assert profile.calibration == calibrate_profile(profile)


@pytest.mark.parametrize("target", [10.0, 1.0])
def test_the_gateway_trusts_stored_pilots_for_any_budget(converted: Manifest, target: float) -> None:
    profile = converted.profile
    assert profile is not None
    vm = _monitor(profile, target)
    assert vm.snapshot(0.0)["options"]["calibrated_at"] == "conversion"
    stored = profile.calibration
    assert stored is not None
    mean_a = next(s for s in vm.streams() if s.subject == "a" and s.signal == "mean")
    expected = Pilot.from_json(stored["features"]["a"]["mean"]).threshold(
        vm.snapshot(0.0)["options"]["per_detector_run_length"]
    )
    assert mean_a.detector.threshold == pytest.approx(expected, rel=1e-3)  # type: ignore[attr-defined]


def test_pilots_measured_under_other_settings_are_replayed_at_load(converted: Manifest) -> None:
    profile = converted.profile
    assert profile is not None and profile.calibration is not None
    other = dict(profile.calibration) | {"key": calibration_key() | {"mean_k": 0.5}}
    vm = _monitor(Profile(profile.features, profile.outputs, profile.rows, other))
    assert vm.snapshot(0.0)["options"]["calibrated_at"] == "load"
    body = profile.to_json()
    assert Profile.from_json(body).calibration == profile.calibration  # written and read as it is
