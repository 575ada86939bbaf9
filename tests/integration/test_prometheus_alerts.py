"""A real Prometheus (Debian's package) scrapes a running gateway and the drift alert fires.

The test starts ``prometheus`` on 127.0.0.1 and a free port with a temporary configuration: scrape the
gateway every second, evaluate docker/prometheus/alerts.yml every second, keep its database in the
test's temporary directory (the ``prometheus`` fixture, tests/integration/conftest.py). Shifted
traffic opens a drift incident in the gateway; the test then reads Prometheus' ``/api/v1/alerts``
until ``SluiceDriftIncidentOpen`` is firing (bounded wait).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

pytestmark = pytest.mark.integration

RULES = Path(__file__).resolve().parents[2] / "docker" / "prometheus" / "alerts.yml"
WAIT_S = 60.0


def firing(client: httpx.Client, name: str) -> list[dict[str, Any]]:
    try:
        r = client.get("/api/v1/alerts")
    except httpx.TransportError:  # not listening yet
        return []
    if r.status_code != 200:
        return []
    alerts: list[dict[str, Any]] = r.json()["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == name and a["state"] == "firing"]


def test_drift_alert_fires_in_a_real_prometheus(
    make_server: Any, prometheus: Any, fitted: dict[str, Any]
) -> None:
    gateway = make_server()
    url = prometheus(gateway.port, rules=RULES)
    _, sample = fitted["clf"]
    rng = np.random.default_rng(7)
    x = sample[rng.integers(0, len(sample), 2000)].copy()
    x[:, 2] += 2 * x[:, 2].std()
    body = {
        "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]
    }
    assert gateway.client.post("/v2/models/clf/infer", json=body).status_code == 200

    deadline = time.monotonic() + WAIT_S
    with httpx.Client(base_url=url, timeout=5) as client:
        while not (alerts := firing(client, "SluiceDriftIncidentOpen")):
            assert time.monotonic() < deadline, "SluiceDriftIncidentOpen did not fire"
            time.sleep(0.25)  # polling interval; the condition above is what synchronises
    assert alerts[0]["labels"] | {"kind": alerts[0]["labels"]["kind"]} == {
        "alertname": "SluiceDriftIncidentOpen",
        "model": "clf",
        "version": "1",
        "kind": alerts[0]["labels"]["kind"],
        "severity": "ticket",
    }
    assert {a["labels"]["kind"] for a in alerts} <= {"drift", "prediction"}
    # The gateway's own view agrees: the incident is open on the shifted feature.
    monitoring = gateway.client.get("/v2/models/clf/monitoring").json()
    assert monitoring["features"]["f2"]["drift"] is True
