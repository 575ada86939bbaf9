"""Progressive rollouts end to end: a real gateway, real HTTP load, the events log on disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sluice.server.cli import main as sluice
from tests.integration.rollout_helpers import (
    AUTH,
    TOKEN,
    copy_version,
    load,
    make_failing_on_large_first_feature,
    v2_row,
    wait_for,
)
from tests.integration.support import metric

pytestmark = pytest.mark.integration

ROLLOUT = """
models:
  clf:
    rollout:
      stable: 1
      candidate: 2
      steps: {steps}
      analysis: {{interval: 0.2s, window: 1s, min_samples: 10, failure_limit: 2}}
      gates:
        - {{metric: error_rate, max: 0.05, max_increase_over_stable: 0.05}}
        - {{metric: latency_p99_ms, max: 2000}}
        - {{metric: drift, max_alarms: 0, dry_run: true}}
"""
TWO_STEPS = "[{weight: 20, for: 1s}, {weight: 50, for: 1s}]"


def start(make_server: Any, repository: Path, tmp_path: Path, steps: str = TWO_STEPS) -> Any:
    # One request per execution: a batch mixing a bad row with good ones would fail them all.
    (repository / "clf" / "config.yaml").write_text("batching: {enabled: false}\n")
    rollouts = tmp_path / "rollouts.yaml"
    rollouts.write_text(ROLLOUT.format(steps=steps))
    return make_server(rollout_file=rollouts, state_dir=tmp_path / "state", admin_token=TOKEN)


def phase(server: Any) -> dict[str, Any]:
    rollout: dict[str, Any] = server.client.get("/v2/rollouts/clf", headers=AUTH).json()["models"]["clf"][
        "rollout"
    ]
    return rollout


def events(tmp_path: Path) -> list[dict[str, Any]]:
    lines = (tmp_path / "state" / "rollouts-events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_a_candidate_failing_a_fifth_of_requests_is_rolled_back(
    make_server: Any, repository: Path, tmp_path: Path, fitted: dict[str, Any]
) -> None:
    _, sample = fitted["clf"]
    threshold = float(np.quantile(sample[:, 0], 0.8))
    make_failing_on_large_first_feature(copy_version(repository, "clf", 1, 2), threshold)
    server = start(make_server, repository, tmp_path)
    with load(server.url, sample) as counts:
        wait_for(lambda: phase(server)["phase"] == "failed", "the rollback")
    # The candidate really failed requests under load (the stable one never did).
    assert sum(n for k, n in counts.items() if k.endswith(":500")) > 0 and counts.get("1:500", 0) == 0
    log = events(tmp_path)
    assert [e["event"] for e in log][:2] == ["started", "step"]
    rolled = log[-1]
    assert rolled["event"] == "rolled_back" and "failure limit" in rolled["reason"]
    gate = next(g for g in rolled["gates"] if g["metric"] == "error_rate")
    assert gate["verdict"] == "fail" and 0.05 < gate["value"] < 0.6, gate
    assert rolled["weight"] == 0 and "all traffic back to 1" in rolled["action"]
    # Every unpinned request now goes to the stable version, and the metrics say so.
    for row in sample[:20]:
        r = server.client.post("/v2/models/clf/infer", json=v2_row(row))
        assert r.status_code == 200 and r.headers["x-model-version"] == "1"
    text = server.client.get("/metrics").text
    assert 'sluice_rollout_weight_percent{model="clf",version="2"} 0.0' in text
    assert 'sluice_rollout_phase{model="clf",phase="failed"} 1.0' in text
    assert 'sluice_rollout_gate_results_total{metric="error_rate",model="clf",result="fail"}' in text


def test_a_healthy_candidate_is_promoted(
    make_server: Any, repository: Path, tmp_path: Path, fitted: dict[str, Any]
) -> None:
    _, sample = fitted["clf"]
    copy_version(repository, "clf", 1, 2)
    server = start(make_server, repository, tmp_path)
    with load(server.url, sample) as counts:
        wait_for(lambda: phase(server)["phase"] == "succeeded", "the promotion")
    assert counts.get("2:200", 0) > 0 and not any(k.endswith(":500") for k in counts)
    kinds = [e["event"] for e in events(tmp_path)]
    assert kinds[:2] == ["started", "step"] and kinds[-1] == "succeeded" and kinds.count("step") == 2
    assert "set stable: 2" in events(tmp_path)[-1]["action"]
    r = server.client.post("/v2/models/clf/infer", json=v2_row(sample[0]))
    assert (r.headers["x-model-version"], r.headers["x-route-reason"]) == ("2", "default")
    assert (
        server.client.post("/v2/models/clf/labels/stable/infer", json=v2_row(sample[0])).headers[
            "x-model-version"
        ]
        == "2"
    )


def test_a_restart_mid_rollout_resumes_the_same_step_and_the_cli_drives_it(
    make_server: Any,
    repository: Path,
    tmp_path: Path,
    fitted: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, sample = fitted["clf"]
    copy_version(repository, "clf", 1, 2)
    steps = "[{weight: 20, for: 0.5s}, {pause: true}, {weight: 50, for: 30s}]"
    first = start(make_server, repository, tmp_path, steps)
    with load(first.url, sample):
        wait_for(lambda: phase(first)["phase"] == "paused", "the pause step")
    assert phase(first)["step"] == 1 and phase(first)["weight"] == 20
    first.__exit__(None, None, None)

    second = start(make_server, repository, tmp_path, steps)
    state = phase(second)
    assert (state["phase"], state["step"], state["weight"]) == ("paused", 1, 20)
    monkeypatch.setenv("SLUICE_ADMIN_TOKEN", TOKEN)
    assert sluice(["rollout", "promote", "clf", "--url", second.url]) == 0
    assert "clf: progressing at step 2, weight 50.0 %" in capsys.readouterr().out
    assert sluice(["rollout", "pause", "clf", "--url", second.url]) == 0
    assert sluice(["rollout", "resume", "clf", "--url", second.url]) == 0
    assert sluice(["rollout", "promote", "clf", "--full", "--url", second.url]) == 0
    assert "clf: succeeded" in capsys.readouterr().out.splitlines()[-1]
    assert sluice(["rollout", "status", "clf", "--url", second.url]) == 0
    summary = capsys.readouterr().out.splitlines()
    assert summary[0].startswith("clf: succeeded, step 3 of 3, 2 over 1;")
    assert "  weights: 1: 0 %, 2: 100 %" in summary and len(summary) < 20
    assert sluice(["rollout", "status", "clf", "--json", "--url", second.url]) == 0
    assert json.loads(capsys.readouterr().out)["models"]["clf"]["weights"] == {"2": 100.0, "1": 0.0}
    # A restart with the same file and artifacts never reruns the finished rollout.
    second.__exit__(None, None, None)
    third = start(make_server, repository, tmp_path, steps)
    assert phase(third)["phase"] == "succeeded"
    assert sum(e["event"] == "started" for e in events(tmp_path)) == 1
    monkeypatch.setenv("SLUICE_ADMIN_TOKEN", "wrong")
    assert sluice(["rollout", "abort", "clf", "--url", third.url]) == 2
    assert "401" in capsys.readouterr().err


def test_a_new_candidate_in_a_changed_file_starts_a_new_rollout_after_a_failed_one(
    make_server: Any, repository: Path, tmp_path: Path, fitted: dict[str, Any]
) -> None:
    _, sample = fitted["clf"]
    threshold = float(np.quantile(sample[:, 0], 0.8))
    make_failing_on_large_first_feature(copy_version(repository, "clf", 1, 2), threshold)
    copy_version(repository, "clf", 1, 3)  # the fixed model, loaded from the start
    server = start(make_server, repository, tmp_path)
    with load(server.url, sample):
        wait_for(lambda: phase(server)["phase"] == "failed", "the rollback of 2")
        rollouts = tmp_path / "rollouts.yaml"
        rollouts.write_text(ROLLOUT.format(steps=TWO_STEPS).replace("candidate: 2", "candidate: 3"))
        wait_for(lambda: phase(server)["candidate"] == 3, "the changed file applied", timeout_s=30)
        wait_for(lambda: phase(server)["phase"] == "succeeded", "the promotion of 3", timeout_s=60)
    log = [(e["event"], e["rollout"].split("->")[1][0]) for e in events(tmp_path)]
    assert ("rolled_back", "2") in log and ("started", "3") in log and log[-1] == ("succeeded", "3"), log
    r = server.client.post("/v2/models/clf/infer", json=v2_row(sample[0]))
    assert r.headers["x-model-version"] == "3"


def test_a_rollout_held_by_too_little_traffic_says_what_it_waits_for(
    make_server: Any, repository: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    copy_version(repository, "clf", 1, 2)
    rollouts = tmp_path / "rollouts.yaml"
    rollouts.write_text(
        ROLLOUT.format(steps=TWO_STEPS).replace(
            "failure_limit: 2", "failure_limit: 2, insufficient_after: 1s"
        )
    )
    server = make_server(rollout_file=rollouts, admin_token=TOKEN)  # no traffic at all
    wait_for(lambda: phase(server)["waiting_for"] is not None, "the rollout to say it waits")
    assert phase(server)["waiting_for"].startswith("error_rate (0 of 10 candidate samples)")
    body = server.client.get("/v2/rollouts/clf", headers=AUTH).json()
    assert body["models"]["clf"]["waiting_for"] == phase(server)["waiting_for"]
    waiting = [e for e in body["events"] if e["event"] == "waiting"]
    assert len(waiting) == 1 and waiting[0]["reason"].startswith("waiting for error_rate (0 of 10")
    held = 'sluice_rollout_waiting_seconds{gate="error_rate",model="clf"}'
    assert metric(server, held) >= 1.0
    monkeypatch.setenv("SLUICE_ADMIN_TOKEN", TOKEN)
    assert sluice(["rollout", "status", "--url", server.url]) == 0
    assert "  waiting for: error_rate (0 of 10 candidate samples)" in capsys.readouterr().out
    # The default state directory sits beside the rollouts file, not in the working directory.
    assert (tmp_path / ".sluice" / "rollouts-events.jsonl").is_file()
