"""Rollout gates judged from a real Prometheus scraping two gateway processes (every replica's traffic).

Two ``sluice serve`` processes share one repository whose candidate (version 2) fails about a fifth of
requests. Gateway A runs the rollout with ``analysis.source: prometheus``; gateway B only splits traffic
50/50 between the same versions, as another replica would. A real Prometheus scrapes both every second.
Under bounded load (light on A, heavier on B) A rolls the candidate back, and the error-rate gate in its
events log was computed from Prometheus over more candidate requests than A itself ever served.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.integration.conftest import free_port
from tests.integration.rollout_helpers import (
    AUTH,
    TOKEN,
    copy_version,
    make_failing_on_large_first_feature,
    v2_row,
    wait_for,
)
from tests.integration.test_cli import sluice

pytestmark = pytest.mark.integration

ROLLOUT = """
models:
  clf:
    rollout:
      stable: 1
      candidate: 2
      steps: [{{weight: 50, for: 1h}}]
      analysis:
        interval: 1s
        window: 5s
        min_samples: 20
        failure_limit: 2
        source: prometheus
        prometheus: {{url: "{url}", timeout: 2s, selector: 'job="sluice"'}}
      gates:
        - {{metric: error_rate, max: 0.05, max_increase_over_stable: 0.05}}
        - {{metric: latency_p99_ms, max: 5000}}
"""
REPLICA = """
models:
  clf:
    traffic: {weights: {1: 50, 2: 50}}
"""


@contextmanager
def paced_load(
    url: str, rows: np.ndarray, *, threads: int, pause_s: float, seconds: float = 30
) -> Iterator[None]:
    """Unpinned requests from ``threads`` clients, ``pause_s`` apart each, until the block ends (bounded)."""
    stop = threading.Event()

    def client(seed: int) -> None:
        rng = np.random.default_rng(seed)
        deadline = time.monotonic() + seconds
        with httpx.Client(base_url=url, timeout=10) as http:
            while not stop.is_set() and time.monotonic() < deadline:
                http.post("/v2/models/clf/infer", json=v2_row(rows[rng.integers(len(rows))]))
                stop.wait(pause_s)

    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    try:
        yield
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=15)


def served(url: str, version: str) -> float:
    """Requests of clf ``version`` this one process counted, whatever their reason or outcome."""
    text = httpx.get(f"{url}/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("sluice_requests_total{")
        and 'model="clf"' in line
        and f'version="{version}"' in line
    )


def test_a_prometheus_sourced_gate_judges_both_replicas_and_rolls_back(
    repository: Path, tmp_path: Path, prometheus: Any, fitted: dict[str, Any]
) -> None:
    _, sample = fitted["clf"]
    threshold = float(np.quantile(sample[:, 0], 0.8))
    make_failing_on_large_first_feature(copy_version(repository, "clf", 1, 2), threshold)
    # One request per execution: a batch mixing a bad row with good ones would fail them all.
    (repository / "clf" / "config.yaml").write_text("batching: {enabled: false}\n")
    replica_file = tmp_path / "replica.yaml"
    replica_file.write_text(REPLICA)
    rollout_file = tmp_path / "rollouts.yaml"
    state = tmp_path / "state-a"
    serve = ["serve", "--repository", str(repository), "--rollout"]
    # A's rollout names Prometheus' address before Prometheus runs (until then its gates are insufficient).
    prom_port = free_port()
    rollout_file.write_text(ROLLOUT.format(url=f"http://127.0.0.1:{prom_port}"))
    env_a = {"SLUICE_STATE_DIR": str(state), "SLUICE_POLL_INTERVAL_S": "0", "SLUICE_ADMIN_TOKEN": TOKEN}
    env_b = {"SLUICE_STATE_DIR": str(tmp_path / "state-b"), "SLUICE_POLL_INTERVAL_S": "0"}
    with (
        sluice(*serve, str(replica_file), env=env_b) as (_, url_b, _),
        sluice(*serve, str(rollout_file), env=env_a) as (_, url_a, log_a),
    ):
        prometheus(*(int(u.rsplit(":", 1)[1]) for u in (url_a, url_b)), port=prom_port)

        def phase() -> str:
            body = httpx.get(f"{url_a}/v2/rollouts/clf", headers=AUTH).json()
            return str(body["models"]["clf"]["rollout"]["phase"])

        with (
            paced_load(url_a, sample, threads=1, pause_s=0.05),
            paced_load(url_b, sample, threads=2, pause_s=0),
        ):
            wait_for(lambda: phase() == "failed", "the rollback", timeout_s=30)
        own = served(url_a, "2")
        metrics_a = httpx.get(f"{url_a}/metrics").text

    events = [json.loads(line) for line in (state / "rollouts-events.jsonl").read_text().splitlines()]
    rolled = events[-1]
    assert rolled["event"] == "rolled_back" and "failure limit" in rolled["reason"], events
    gate = next(g for g in rolled["gates"] if g["metric"] == "error_rate")
    assert gate["source"] == "prometheus" and gate["verdict"] == "fail", gate
    assert 0.05 < gate["value"] < 0.6 and gate["stable"] < 0.05, gate
    # Over a 5 s window it counted more candidate requests than A served in the whole test: B's too.
    assert gate["samples"] > own > 0, (gate, own)
    latency = next(g for g in rolled["gates"] if g["metric"] == "latency_p99_ms")
    assert latency["source"] == "prometheus" and latency["verdict"] == "pass", latency
    assert 'sluice_rollout_gate_results_total{metric="error_rate",model="clf",result="fail"}' in metrics_a
    assert "rollout tick failed" not in "".join(log_a)
