"""Monitoring end to end through HTTP: stable traffic stays quiet, a shifted feature is caught and shown.

Traffic is a seeded bootstrap of the sample the ``clf`` model was trained on (its manifest's reference
profile comes from the same sample); many rows go in each request to keep the test fast. The test waits
for the monitor's background task with a bounded loop on what the monitoring endpoint reports.
"""

from __future__ import annotations

import re
import time
from typing import Any

import numpy as np
import pytest

from tests.integration.rollout_helpers import copy_version

pytestmark = pytest.mark.integration

FEATURES = ["f0", "f1", "f2", "f3"]
SHIFTED = "f2"
#: S1: a +1 sigma shift is caught within this many rows.
S1_BOUND = 2000


def infer(gateway: Any, x: np.ndarray) -> None:
    body = {
        "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]
    }
    r = gateway.client.post("/v2/models/clf/infer", json=body)
    assert r.status_code == 200, r.text


def monitoring_after(gateway: Any, rows: int, timeout_s: float = 30.0) -> dict[str, Any]:
    """The monitoring body once the monitor has taken ``rows`` rows in (bounded wait)."""
    deadline = time.monotonic() + timeout_s
    while True:
        r = gateway.client.get("/v2/models/clf/versions/1/monitoring")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        if body["observed"]["rows"] >= rows and body["pending"] == 0:
            return body
        assert time.monotonic() < deadline, f"monitor saw {body['observed']} of {rows} rows"
        time.sleep(0.05)  # polling interval; the condition above is what synchronises


def drift_alarms(metrics_text: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for m in re.finditer(r"^sluice_drift_alarms_total\{([^}]*)\} (\S+)$", metrics_text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if labels["model"] == "clf":
            found[labels["feature"]] = found.get(labels["feature"], 0.0) + float(m.group(2))
    return found


def test_stable_then_shifted_feature(make_server: Any, repository: Any, fitted: dict[str, Any]) -> None:
    # A family-wise budget of 1 false alarm per 100k rows (default 10) so 6,000 stable rows stay quiet.
    (repository / "clf" / "config.yaml").write_text("monitoring: {target_false_alarms_per_100k: 1}\n")
    gateway = make_server()
    _, sample = fitted["clf"]
    rng = np.random.default_rng(42)

    stable_rows = 6000
    for _ in range(stable_rows // 500):
        infer(gateway, sample[rng.integers(0, len(sample), 500)])
    body = monitoring_after(gateway, stable_rows)
    assert body["watched"] is True and body["saturated"] is False  # a handful of clients: not saturated
    assert body["reference"]["features"] == ["profile"] and body["reference"]["prediction"] == "profile"
    assert body["options"]["target_false_alarms_per_100k"] == 1.0
    for name in FEATURES:
        feature = body["features"][name]
        assert feature["alarms"] == 0 and feature["drift"] is False, (name, feature["detectors"])
        assert feature["current"]["closed"] == stable_rows // 1000
        assert feature["current"]["last"]["psi"] < 0.25
    assert all(d["alarms"] == 0 for d in body["prediction"]["detectors"])
    assert body["incidents"] == []
    assert drift_alarms(gateway.client.get("/metrics").text) == {}

    # Shift one feature by +1 reference standard deviation, 100 rows per request.
    std = body["features"][SHIFTED]["reference"]["std"]
    column = FEATURES.index(SHIFTED)
    for _ in range(S1_BOUND // 100):
        x = sample[rng.integers(0, len(sample), 100)].copy()
        x[:, column] += std
        infer(gateway, x)
    body = monitoring_after(gateway, stable_rows + S1_BOUND)

    shifted = body["features"][SHIFTED]
    assert shifted["drift"] is True
    mean = next(d for d in shifted["detectors"] if d["signal"] == "mean")
    assert mean["alarms"] >= 1
    first = min(a["sample"] for a in mean["last_alarms"])
    assert 0 <= first - stable_rows < S1_BOUND
    for name in set(FEATURES) - {SHIFTED}:
        assert body["features"][name]["alarms"] == 0, name
        assert body["features"][name]["drift"] is False
    incidents = [i for i in body["incidents"] if i["kind"] == "drift"]
    assert [i["subject"] for i in incidents] == [SHIFTED]
    assert incidents[0]["state"] == "open" and "mean" in incidents[0]["signals"]

    text = gateway.client.get("/metrics").text
    assert set(drift_alarms(text)) == {SHIFTED}
    assert f'sluice_drift_status{{feature="{SHIFTED}",model="clf",version="1"}} 1.0' in text
    assert 'sluice_monitoring_incidents_open{kind="drift",model="clf",version="1"} 1.0' in text


def test_monitoring_endpoint_for_unknown_model_and_disabled_model(make_server: Any, repository: Any) -> None:
    (repository / "reg" / "config.yaml").write_text("monitoring: {enabled: false}\n")
    gateway = make_server()
    r = gateway.client.get("/v2/models/nope/monitoring")
    assert r.status_code == 404 and r.json()["code"] == "model_not_found"
    r = gateway.client.get("/v2/models/reg/monitoring")
    assert r.status_code == 200 and r.json() == {"model": "reg", "version": "1", "watched": False}


def test_the_monitor_queue_is_bounded_in_rows(make_server: Any) -> None:
    gateway = make_server(monitoring={"max_queued_rows": 3})
    big = np.zeros((4, 4), np.float32)
    r = gateway.client.post(
        "/v2/models/clf/infer",
        json={
            "inputs": [{"name": "input", "shape": [4, 4], "datatype": "FP32", "data": big.ravel().tolist()}]
        },
    )
    assert r.status_code == 200  # the request is served; only its observation is left out
    dropped = 'sluice_monitoring_observations_dropped_total{model="clf",reason="queue_full",version="1"}'
    assert f"{dropped} 1.0" in gateway.client.get("/metrics").text


def test_a_shadow_versions_pairs_reach_its_monitor(
    make_server: Any, repository: Any, fitted: dict[str, Any], tmp_path: Any
) -> None:
    copy_version(repository, "clf", 1, 2)
    (repository / "clf" / "config.yaml").write_text("monitoring: {reference_size: 100}\n")
    rollouts = tmp_path / "rollouts.yaml"
    rollouts.write_text(
        "models:\n  clf:\n    traffic: {weights: {1: 100}}\n    shadows:\n"
        "      - {version: 2, percent: 100, compare: {mode: argmax}}\n"
    )
    gateway = make_server(rollout_file=rollouts, state_dir=tmp_path / "state")
    _, sample = fitted["clf"]
    for row in sample[:150]:
        infer(gateway, row[None, :])

    deadline = time.monotonic() + 30
    while True:
        body = gateway.client.get("/v2/models/clf/versions/2/monitoring").json()
        shadow = body["shadow"]
        if shadow is not None and shadow["pairs"] == 150 and body["pending"] == 0:
            break
        assert time.monotonic() < deadline, shadow
        time.sleep(0.05)  # polling interval; the condition above is what synchronises
    # The copy agrees with its primary on every request: its reference says so, and nothing alarms.
    assert shadow["reference_from"] == "first_pairs"
    assert shadow["reference"]["disagreement_rate"] == 0.001  # the floor of a rate never seen
    assert [d["signal"] for d in shadow["detectors"]] == ["disagreement"]  # no spread to watch: identical
    assert shadow["anomaly"] is False and all(d["alarms"] == 0 for d in shadow["detectors"])
    primary = gateway.client.get("/v2/models/clf/versions/1/monitoring").json()
    assert primary["shadow"] is None


def test_a_rise_of_client_errors_is_its_own_incident(
    make_server: Any, repository: Any, fitted: dict[str, Any]
) -> None:
    """422s never count against the model, but 40 % of requests failing validation is an incident."""
    (repository / "clf" / "config.yaml").write_text("monitoring: {reference_size: 100}\n")
    gateway = make_server()
    _, sample = fitted["clf"]
    rng = np.random.default_rng(7)
    bad = {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [0.0, 1.0, 2.0]}]}
    for _ in range(300):
        infer(gateway, sample[rng.integers(0, len(sample), 1)])
    for i in range(150):
        if i % 5 < 2:
            assert gateway.client.post("/v2/models/clf/infer", json=bad).status_code in (400, 422)
        else:
            infer(gateway, sample[rng.integers(0, len(sample), 1)])
    deadline = time.monotonic() + 30.0
    while True:
        body = gateway.client.get("/v2/models/clf/versions/1/monitoring").json()
        if body["observed"]["requests"] >= 450 and body["pending"] == 0:
            break
        assert time.monotonic() < deadline, body["observed"]
        time.sleep(0.05)  # polling interval; the condition above is what synchronises
    assert body["client_errors"]["anomaly"] is True
    assert body["client_errors"]["detectors"][0]["alarms"] >= 1
    assert body["errors"]["anomaly"] is False and body["errors"]["detectors"][0]["alarms"] == 0
    assert [i["kind"] for i in body["incidents"]] == ["client_errors"]
    text = gateway.client.get("/metrics").text
    assert 'sluice_monitoring_incidents_open{kind="client_errors",model="clf",version="1"} 1.0' in text
