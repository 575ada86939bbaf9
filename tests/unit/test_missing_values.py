"""The missing-value stream: a version that accepts NaN has each numeric feature's NaN share watched."""

from __future__ import annotations

import numpy as np

from sluice.monitoring.layout import Layout, Observation, WatchOptions
from sluice.monitoring.version import VersionMonitor
from tests.unit.test_detector_batches import FEATURES, _profile


def chunk(rng: np.random.Generator, rows: int, first: int, nan_share: float = 0.0) -> list[Observation]:
    x = rng.normal(size=(rows, len(FEATURES))).astype(np.float32)
    x[rng.random(rows) < nan_share, 1] = np.nan
    return [
        Observation({"x": x[i : i + 10]}, None, 0.005, False, float(first + i)) for i in range(0, rows, 10)
    ]


def monitor(rng: np.random.Generator, watch_missing: bool) -> VersionMonitor:
    layout = Layout.from_signature([("x", "FP32", (-1, len(FEATURES)), FEATURES)], [])
    profile = _profile(rng)
    assert all(f.missing == 0.0 for f in profile.features.values())  # a reference without NaN
    return VersionMonitor("m", 1, layout, profile, WatchOptions(watch_missing=watch_missing))


def test_a_rise_of_missing_values_alarms_on_that_feature_only() -> None:
    rng = np.random.default_rng(11)
    vm = monitor(rng, watch_missing=True)
    assert vm.feed(chunk(rng, 3000, 0)) == []
    alarms = vm.feed(chunk(rng, 2000, 3000, nan_share=0.1))
    assert {(a.stream.subject, a.stream.signal) for a in alarms} == {("x1", "missing")}
    assert min(a.at for a in alarms) - 3000 < 200  # 10 % NaN against a reference of none
    x1 = vm.snapshot(mono_now=6000.0, wall_now=0.0)["features"]["x1"]
    missing = next(d for d in x1["detectors"] if d["signal"] == "missing")
    assert missing["samples"] == 5000 and missing["alarms"] == len(alarms)
    # The NaN rows are left out of the feature's value streams, which stay quiet.
    assert all(d["alarms"] == 0 for d in x1["detectors"] if d["signal"] != "missing")


def test_without_nan_accepted_there_is_no_missing_stream() -> None:
    rng = np.random.default_rng(12)
    vm = monitor(rng, watch_missing=False)
    vm.feed(chunk(rng, 500, 0))
    assert "missing" not in {s.signal for s in vm.streams()}
    with_missing = monitor(rng, watch_missing=True)
    with_missing.feed(chunk(rng, 500, 0))
    assert sum(s.signal == "missing" for s in with_missing.streams()) == len(FEATURES)


def test_v2_json_reads_null_as_missing_for_a_model_that_accepts_nan() -> None:
    import orjson
    import pytest

    from sluice.converters.artifact.errors import SluiceError
    from sluice.converters.artifact.manifest import TensorSpec
    from sluice.server.codecs.v2 import decode_v2

    signature = [TensorSpec("x", "FP32", (-1, 2), ("a", "b"))]
    body = orjson.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [[1.5, None], [None, 2.0]]}]}
    )
    x = decode_v2(body, header_length=None, signature=signature, allow_nan=True).inputs["x"]
    assert x.dtype == np.float32 and np.isnan(x).tolist() == [[False, True], [True, False]]
    assert x[0, 0] == 1.5 and x[1, 1] == 2.0
    with pytest.raises(SluiceError):  # without allow_nan, null stays an error
        decode_v2(body, header_length=None, signature=signature)
    ints = [TensorSpec("n", "INT64", (-1,), ("n",))]
    body = orjson.dumps({"inputs": [{"name": "n", "datatype": "INT64", "shape": [2], "data": [1, None]}]})
    with pytest.raises(SluiceError):  # integers have no missing value
        decode_v2(body, header_length=None, signature=ints, allow_nan=True)
