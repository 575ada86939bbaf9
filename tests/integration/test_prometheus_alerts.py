"""A real Prometheus (Debian's package) scrapes a running gateway and the drift alert fires.

The test starts ``prometheus`` on 127.0.0.1 and a free port with a temporary configuration: scrape the
gateway every second, evaluate docker/prometheus/alerts.yml every second, keep its database in the
test's temporary directory. Shifted traffic opens a drift incident in the gateway; the test then reads
Prometheus' ``/api/v1/alerts`` until ``SluiceDriftIncidentOpen`` is firing (bounded wait).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.integration

RULES = Path(__file__).resolve().parents[2] / "docker" / "prometheus" / "alerts.yml"
WAIT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Any]:
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is not installed (Debian package prometheus); CI must run this test")
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    started: list[subprocess.Popen[bytes]] = []

    def start(target_port: int) -> str:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {"job_name": "sluice", "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}
            ],
        }
        path = tmp_path / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        port = free_port()
        with (tmp_path / "prometheus.log").open("wb") as log:
            process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={path}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        started.append(process)
        return f"http://127.0.0.1:{port}"

    yield start
    for process in started:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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
    url = prometheus(gateway.port)
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
