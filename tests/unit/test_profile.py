"""The reference profile: typed in the artifact leaf, written and read back as the same manifest JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sluice.converters._profile import build_profile
from sluice.converters.artifact.errors import ModelLoadError
from sluice.converters.artifact.manifest import Manifest, TensorSpec
from sluice.converters.artifact.profile import (
    CategoricalFeature,
    ClassifierOutputs,
    NumericFeature,
    Profile,
    RegressorOutputs,
)


def _classifier_profile() -> Profile:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2))
    x[::4, 1] = np.nan
    plan = rng.choice(np.array(["month", "year", "week"], dtype=object), 300, p=[0.5, 0.3, 0.2])
    empty = np.full(300, np.nan)
    return build_profile(
        [x[:, 0], x[:, 1], plan, empty],
        ["a", "b", "plan", "empty"],
        labels=(x[:, 0] > 0).astype(np.int64),
        scores=rng.random((300, 2)),
        class_labels=[0, 1],
        categorical=["plan"],
    )


def _regressor_profile() -> Profile:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 3))
    return build_profile(x, ["f0", "f1", "f2"], labels=None, scores=x.sum(axis=1), class_labels=None)


@pytest.mark.parametrize("make", [_classifier_profile, _regressor_profile])
def test_a_built_profile_round_trips_through_json(make: Any) -> None:
    profile = make()
    body = json.loads(json.dumps(profile.to_json()))
    assert Profile.from_json(body) == profile
    assert Profile.from_json(body).to_json() == body


def test_the_typed_profile_says_what_the_sample_holds() -> None:
    profile = _classifier_profile()
    b, plan, empty = profile.features["b"], profile.features["plan"], profile.features["empty"]
    assert isinstance(b, NumericFeature) and b.missing == pytest.approx(0.25)
    assert (
        isinstance(plan, CategoricalFeature) and plan.distinct == 3 and next(iter(plan.categories)) == "month"
    )
    assert isinstance(empty, NumericFeature) and empty.mean is None and empty.missing == 1.0
    assert isinstance(profile.outputs, ClassifierOutputs)
    assert profile.outputs.score == "positive_class_probability" and profile.rows == 300
    assert isinstance(_regressor_profile().outputs, RegressorOutputs)


def test_a_manifest_writes_the_profile_as_it_reads_it(tmp_path: Path) -> None:
    spec = TensorSpec("input", "FP32", (-1, 2), ("a", "b"))
    Manifest(inputs=[spec], outputs=[], profile=_classifier_profile()).write(tmp_path)
    written = (tmp_path / "manifest.json").read_text()
    again = tmp_path / "again"
    again.mkdir()
    Manifest.read(tmp_path).write(again)
    assert (again / "manifest.json").read_text() == written
    assert json.loads(written)["profile"]["features"]["b"]["histogram"]["counts"]


def test_a_hand_written_profile_loads_with_defaults() -> None:
    profile = Profile.from_json({"features": {"x": {"mean": 1.0, "std": 2.0}}})
    assert profile.features["x"] == NumericFeature(mean=1.0, std=2.0)
    assert profile.outputs is None and profile.rows == 0


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ([], "profile"),
        ({"features": []}, "features"),
        ({"features": {"x": {"type": "numeric", "mean": "high"}}}, "features.x.mean"),
        ({"features": {"x": {"type": "text"}}}, "features.x.type"),
        ({"features": {"x": {"histogram": {"edges": [0.0, 1.0], "counts": [1, 2]}}}}, "features.x.histogram"),
        ({"features": {"c": {"type": "categorical", "categories": {"a": None}}}}, "features.c.categories.a"),
        ({"features": {}, "rows": 1.5}, "rows"),
        ({"features": {}, "outputs": {"value": {"mean": 1.0}}}, "outputs.value.std"),
        ({"features": {}, "outputs": {"class_shares": {"0": 1.0}, "score": "logits"}}, "outputs.score"),
        ({"features": {}, "outputs": {"labels": {}}}, "outputs"),
    ],
)
def test_a_malformed_profile_is_a_model_load_error_naming_the_key(body: Any, key: str) -> None:
    with pytest.raises(ModelLoadError, match="bad reference profile") as caught:
        Profile.from_json(body)
    assert caught.value.details == {"key": "" if key == "profile" else key}
    assert key in caught.value.message


def test_a_manifest_with_a_malformed_profile_does_not_load(tmp_path: Path) -> None:
    body = Manifest(inputs=[TensorSpec("input", "FP32", (-1, 1))], outputs=[]).to_json()
    body["profile"] = {"features": {"x": {"mean": [1.0]}}}
    (tmp_path / "manifest.json").write_text(json.dumps(body))
    with pytest.raises(ModelLoadError, match=r"features\.x\.mean: expected a number"):
        Manifest.read(tmp_path)
