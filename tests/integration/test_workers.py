"""``sluice serve --workers 2``: one port, one truthful /metrics, agreeing routes, one rollout owner."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict

from sluice.server.app import Gateway
from sluice.server.settings import Settings, settings_from_json, settings_json
from tests.integration.rollout_helpers import copy_version, wait_for
from tests.integration.test_cli import sluice

pytestmark = pytest.mark.integration

ROLLOUTS = """
models:
  clf:
    traffic:
      weights: {1: 50, 2: 50}
      sticky: {key: "query:user", salt: workers}
  reg:
    rollout:
      stable: 1
      candidate: 2
      steps: [{weight: 100, for: 1h}]
      analysis: {interval: 0.2s, window: 1s, min_samples: 10}
      gates:
        - {metric: error_rate, max: 0.5}
"""
ROW = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [0.1, 0.2, 0.3, 0.4]}]}


def requests_by_pid(metrics_dir: Path) -> dict[int, float]:
    """``sluice_requests_total`` of model clf, per worker, from the shared multiprocess files."""
    found: dict[int, float] = {}
    for path in metrics_dir.glob("counter_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        for key, value, _ts, _pos in MmapedDict.read_all_values_from_file(str(path)):
            _metric, name, labels, _help = json.loads(key)
            if name == "sluice_requests_total" and labels.get("model") == "clf":
                found[pid] = found.get(pid, 0.0) + value
    return found


def test_two_workers_one_metrics_view_sticky_routes_and_one_rollout_owner(
    repository: Path, tmp_path: Path
) -> None:
    copy_version(repository, "clf", 1, 2)
    copy_version(repository, "reg", 1, 2)
    rollouts = tmp_path / "rollouts.yaml"
    rollouts.write_text(ROLLOUTS)
    state = tmp_path / "state"
    scratch = tmp_path / "tmp"  # the supervisor's metrics directory lands here (tempfile honours TMPDIR)
    scratch.mkdir()
    args = ["serve", "--repository", str(repository), "--rollout", str(rollouts), "--workers", "2"]
    env = {"SLUICE_STATE_DIR": str(state), "TMPDIR": str(scratch), "SLUICE_POLL_INTERVAL_S": "0"}
    with sluice(*args, env=env) as (proc, url, log):
        try:
            (metrics_dir,) = scratch.glob("sluice-metrics-*")
            # The supervisor listens before its workers start: this waits in the backlog, never refused.
            assert httpx.get(f"{url}/v2/health/ready", timeout=30).status_code == 200

            # Both workers must be up before counting: each one's live in-flight gauge file exists.
            wait_for(lambda: len(list(metrics_dir.glob("gauge_livesum_*.db"))) == 2, "two workers")
            sent = 200
            for _ in range(sent):  # a fresh connection each: the kernel hands them to either worker
                r = httpx.post(f"{url}/v2/models/clf/infer", json=ROW, headers={"connection": "close"})
                assert r.status_code == 200
            text = httpx.get(f"{url}/metrics").text
            series = [
                line.rsplit(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")
            ]
            assert len(series) == len(set(series)), "a series appears twice"
            assert 'pid="' not in text, "every gauge aggregates across workers"
            served = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("sluice_requests_total{") and 'model="clf"' in line
            )
            assert served == sent
            per_worker = requests_by_pid(metrics_dir)
            assert sum(per_worker.values()) == sent
            assert len([n for n in per_worker.values() if n > 0]) == 2, per_worker
            assert "sluice_in_flight_requests 0.0" in text

            # Sticky keys: the same version from either worker, over fresh connections.
            for user in ("alice", "bob", "carol"):
                answers = set()
                for _ in range(50 if user == "alice" else 10):
                    r = httpx.post(
                        f"{url}/v2/models/clf/infer?user={user}", json=ROW, headers={"connection": "close"}
                    )
                    answers.add((r.headers["x-model-version"], r.headers["x-route-reason"]))
                assert len(answers) == 1 and next(iter(answers))[1] == "sticky", (user, answers)

            # One rollout owner: one `started` event, and every worker routes reg with the owner's weight.
            events_path = state / "rollouts-events.jsonl"
            wait_for(events_path.exists, "the rollout's first event")
            time.sleep(2.5)  # longer than a follower's lock retry: a second owner would have started again
            events = [json.loads(line) for line in events_path.read_text().splitlines()]
            assert [e["event"] for e in events if e["model"] == "reg"].count("started") == 1, events
            versions = {
                httpx.post(f"{url}/v2/models/reg/infer", json=ROW, headers={"connection": "close"}).headers[
                    "x-model-version"
                ]
                for _ in range(40)
            }
            assert versions == {"2"}, "a follower routed by its own idea of the rollout"
            assert sum("owns the rollouts" in line for line in log) == 1, "".join(log)
        finally:  # the supervisor stops its workers on SIGTERM (a SIGKILL would orphan them)
            proc.terminate()
            proc.wait(timeout=30)
    assert not metrics_dir.exists(), "the supervisor removes the metrics directory"


def test_settings_reach_the_workers_unchanged(repository: Path) -> None:
    settings = Settings(
        repository=repository,
        workers=3,
        admin_token="s3cret",
        batching={"max_batch_size": 8},
        rollout_file=repository / "rollouts.yaml",
    )
    again = settings_from_json(settings_json(settings))
    assert again == settings
    assert again.admin_token is not None and again.admin_token.get_secret_value() == "s3cret"


def test_a_follower_takes_over_when_the_owner_stops(repository: Path, tmp_path: Path) -> None:
    """Two workers' gateways in one process (flock is per open file): one owner, then a takeover."""
    copy_version(repository, "clf", 1, 2)
    copy_version(repository, "reg", 1, 2)
    rollouts = tmp_path / "rollouts.yaml"
    rollouts.write_text(ROLLOUTS)
    settings = Settings(
        repository=repository,
        rollout_file=rollouts,
        state_dir=tmp_path / "state",
        workers=2,
        poll_interval_s=0,
        monitoring={"enabled": False},
    )

    async def scenario() -> None:
        first, second = Gateway(settings), Gateway(settings)
        await first.start()
        await second.start()
        try:
            assert first.rollouts.owner and not second.rollouts.owner
            deadline = time.monotonic() + 10
            while second.rollouts.plans["reg"].weights != {1: 0.0, 2: 100.0}:
                assert time.monotonic() < deadline, "the follower never followed"
                await asyncio.sleep(0.05)
            await first.stop()
            deadline = time.monotonic() + 10
            while not second.rollouts.owner:
                assert time.monotonic() < deadline, "nobody took over"
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # the new owner ticks: it resumes, never restarts
            assert second.rollouts.plans["reg"].weights == {1: 0.0, 2: 100.0}
        finally:
            await second.stop()
        lines = (tmp_path / "state" / "rollouts-events.jsonl").read_text().splitlines()
        events = [json.loads(line) for line in lines]
        assert [e["event"] for e in events if e["model"] == "reg"].count("started") == 1, events

    asyncio.run(scenario())
