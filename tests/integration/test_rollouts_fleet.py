"""One rollout across three replicas: three ``sluice serve`` processes, one repository, one real Redis.

Each test starts ``redis-server`` (Debian's package) on loopback and three gateways that name it in
``SLUICE_ROLLOUT_STORE``; traffic is spread over the three. What is asserted is what an operator sees:
each replica's ``/v2/rollouts`` status, its ``/metrics``, the events log, and that requests keep answering.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
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

pytestmark = pytest.mark.integration

#: The analysis interval of every rollout here: replicas must agree within one.
INTERVAL_S = 1.0
ROLLOUT = """
models:
  clf:
    rollout:
      stable: 1
      candidate: 2
      steps: {steps}
      analysis: {{interval: {interval}s, window: 3s, min_samples: 10, failure_limit: 2}}
      gates:
        - {{metric: error_rate, max: 0.05, max_increase_over_stable: 0.05}}
"""


class RedisServer:
    """``redis-server`` on 127.0.0.1, without persistence: a restart loses every key."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            if os.environ.get("CI"):
                pytest.fail("redis-server is not installed (Debian package redis-server); CI must run this")
            pytest.skip("redis-server is not installed (apt-get install redis-server)")
        self.binary, self.directory, self.port = binary, directory, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", str(self.directory)]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._answers, "redis-server to answer", timeout_s=20)

    def _answers(self) -> bool:
        with contextlib.suppress(OSError), socketpair(self.port) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
        return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        self.process = None


@contextlib.contextmanager
def socketpair(port: int) -> Iterator[Any]:
    import socket

    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    try:
        yield s
    finally:
        s.close()


class Replica:
    """One ``sluice serve`` process; its log goes to a file that the test reads."""

    def __init__(self, name: str, repository: Path, rollouts: Path, store: str, directory: Path) -> None:
        self.name, self.port = name, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = directory / f"{name}.log"
        env = {
            **os.environ,
            "SLUICE_ROLLOUT_STORE": store,
            "SLUICE_ADMIN_TOKEN": TOKEN,
            "SLUICE_MONITORING__ENABLED": "false",
            "SLUICE_STATE_DIR": str(directory / f"{name}-state"),
        }
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sluice.server.cli", "serve", "--repository", str(repository),
                 "--rollout", str(rollouts), "--port", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )  # fmt: skip
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def ready(self) -> bool:
        assert self.process.poll() is None, self.log()
        with contextlib.suppress(httpx.HTTPError):
            return self.http.get("/v2/health/ready").status_code == 200
        return False

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = self.http.get("/v2/rollouts/clf", headers=AUTH).json()
        return body

    def rollout(self) -> dict[str, Any]:
        found: dict[str, Any] = self.status()["models"]["clf"]["rollout"]
        return found

    def weights(self) -> dict[str, float]:
        found: dict[str, float] = self.status()["models"]["clf"]["weights"]
        return found

    def metric(self, name: str) -> float:
        for line in self.http.get("/metrics").text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return float("nan")

    def leads(self) -> bool:
        return self.process.poll() is None and self.metric("sluice_rollout_leader") == 1

    def log(self) -> str:
        return self.log_path.read_text()

    def kill(self) -> None:
        """SIGKILL the replica and whatever it started, as a node or container dying would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        self.http.close()
        if self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)
        self.kill()  # its own session: nothing it started outlives the test


@pytest.fixture
def fleet(repository: Path, tmp_path: Path) -> Iterator[Any]:
    """``fleet(steps)`` starts Redis and three replicas on one repository and one rollouts file."""
    redis = RedisServer(tmp_path)
    replicas: list[Replica] = []

    def start(steps: str) -> tuple[RedisServer, list[Replica]]:
        # One request per execution: a batch mixing a bad row with good ones would fail them all.
        (repository / "clf" / "config.yaml").write_text("batching: {enabled: false}\n")
        rollouts = tmp_path / "rollouts.yaml"
        rollouts.write_text(ROLLOUT.format(steps=steps, interval=INTERVAL_S))
        redis.start()
        for name in ("a", "b", "c"):
            replicas.append(Replica(name, repository, rollouts, redis.url, tmp_path))
        for replica in replicas:
            wait_for(replica.ready, f"replica {replica.name} to be ready", timeout_s=90)
        return redis, replicas

    yield start
    for replica in replicas:
        replica.stop()
    redis.stop()


@contextlib.contextmanager
def traffic(replicas: list[Replica], rows: np.ndarray, seconds: float = 90) -> Iterator[list[dict[str, int]]]:
    """Unpinned requests to every replica at once (one client each), until the block ends (bounded).

    Counts by ``version:status``; a replica that is gone counts ``gone`` (the leader is killed on purpose).
    """
    stop = threading.Event()
    counts: list[dict[str, int]] = [{} for _ in replicas]

    def client(replica: Replica, seen: dict[str, int], seed: int) -> None:
        rng = np.random.default_rng(seed)
        deadline = time.monotonic() + seconds
        with httpx.Client(base_url=replica.url, timeout=10) as http:
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    r = http.post("/v2/models/clf/infer", json=v2_row(rows[rng.integers(len(rows))]))
                    key = f"{r.headers.get('x-model-version')}:{r.status_code}"
                except httpx.HTTPError:
                    key = "gone"
                    stop.wait(0.05)  # a dead replica: do not spin
                seen[key] = seen.get(key, 0) + 1

    threads = [
        threading.Thread(target=client, args=(r, c, i))
        for i, (r, c) in enumerate(zip(replicas, counts, strict=True))
    ]
    for t in threads:
        t.start()
    try:
        yield counts
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=15)


def agree(replicas: list[Replica], step: int, phase: str) -> bool:
    states = [r.rollout() for r in replicas]
    return all((s["step"], s["phase"]) == (step, phase) for s in states)


def events_of(replica: Replica) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = replica.status()["events"]
    return found


def print_events(title: str, events: list[dict[str, Any]]) -> None:
    """The event log as an operator reads it (``pytest -s`` shows it)."""
    print(f"\n--- {title}")
    for e in events:
        print(f"{e['ts']} replica={e.get('replica')} {e['event']} step={e['step']} weight={e['weight']} "
              f"{e['reason']}")  # fmt: skip


def test_a_progressive_rollout_moves_in_step_everywhere_and_survives_the_leader_dying(
    fleet: Any, repository: Path, fitted: dict[str, Any]
) -> None:
    _, sample = fitted["clf"]
    copy_version(repository, "clf", 1, 2)
    redis, replicas = fleet(
        "[{weight: 20, for: 2s}, {weight: 40, for: 2s}, {pause: true}, {weight: 60, for: 2s}]"
    )
    wait_for(lambda: sum(r.leads() for r in replicas) == 1, "one leader", timeout_s=20)
    with traffic(replicas, sample):
        # (a) each step is applied by every replica within one analysis interval of the leader
        leader = next(r for r in replicas if r.leads())
        for step, phase in ((1, "progressing"), (2, "paused")):
            wait_for(lambda s=step: leader.rollout()["step"] == s, f"the leader at step {step}", timeout_s=60)
            wait_for(
                lambda s=step, p=phase: agree(replicas, s, p),  # type: ignore[misc]
                f"every replica at step {step}",
                timeout_s=INTERVAL_S,
            )
        assert all(r.weights() == {"1": 60.0, "2": 40.0} for r in replicas)
        gates = next(e for e in events_of(leader) if e["event"] == "step" and e["step"] == 2)["gates"]
        assert gates[0]["source"] == "fleet", gates  # the leader judged every replica's traffic

        # (c) SIGKILL the leader mid-rollout: another replica takes the lease within a few seconds
        leader.kill()
        killed = time.monotonic()
        survivors = [r for r in replicas if r is not leader]
        wait_for(lambda: sum(r.leads() for r in survivors) == 1, "a new leader", timeout_s=10)
        took_over_s = time.monotonic() - killed
        assert took_over_s < 5, took_over_s
        assert agree(survivors, 2, "paused")  # nothing restarted: the same step
        # A restarted replica joins at the current step.
        replicas.append(
            Replica(
                "d", repository, leader.log_path.parent / "rollouts.yaml", redis.url, leader.log_path.parent
            )
        )
        wait_for(replicas[-1].ready, "the restarted replica", timeout_s=90)
        assert (replicas[-1].rollout()["step"], replicas[-1].weights()) == (2, {"1": 60.0, "2": 40.0})
        # The rollout goes on from there: promote on any replica, the new leader finishes it.
        assert survivors[0].http.post("/v2/rollouts/clf/promote", headers=AUTH).status_code == 200
        alive = [*survivors, replicas[-1]]
        wait_for(
            lambda: all(r.rollout()["phase"] == "succeeded" for r in alive), "the promotion", timeout_s=60
        )
    events = events_of(survivors[0])
    print_events("progressive rollout with a leader SIGKILLed at the pause step", events)
    kinds = [e["event"] for e in events]
    assert kinds.count("started") == 1 and kinds[-1] == "succeeded", kinds
    took = [e for e in events if e["event"] == "leader"]  # the take-over, by a survivor, at step 2
    assert took and took[-1]["step"] == 2 and f":{leader.process.pid}:" not in took[-1]["replica"], took
    assert len({e.get("replica") for e in events if e["event"] == "step"}) >= 2, "steps by two leaders"
    for replica in alive:
        assert replica.weights() == {"1": 0.0, "2": 100.0}


def test_a_failing_candidate_is_rolled_back_on_every_replica_within_one_interval(
    fleet: Any, repository: Path, fitted: dict[str, Any]
) -> None:
    _, sample = fitted["clf"]
    threshold = float(np.quantile(sample[:, 0], 0.8))
    make_failing_on_large_first_feature(copy_version(repository, "clf", 1, 2), threshold)
    _, replicas = fleet("[{weight: 30, for: 30s}, {weight: 60, for: 30s}]")
    with traffic(replicas, sample) as counts:
        wait_for(
            lambda: any(r.rollout()["phase"] == "failed" for r in replicas), "the rollback", timeout_s=60
        )
        wait_for(lambda: agree(replicas, 0, "failed"), "every replica rolled back", timeout_s=INTERVAL_S)
    assert all(r.weights() == {"1": 100.0} for r in replicas)
    assert all(sum(n for k, n in c.items() if k == "2:500") > 0 for c in counts), "every replica saw failures"
    for replica in replicas:
        for row in sample[:5]:
            r = replica.http.post("/v2/models/clf/infer", json=v2_row(row))
            assert r.status_code == 200 and r.headers["x-model-version"] == "1"
        assert replica.metric('sluice_rollout_weight_percent{model="clf",version="2"}') == 0
    events = events_of(replicas[0])
    print_events("failing candidate rolled back", events)
    rolled = events[-1]
    assert rolled["event"] == "rolled_back" and "failure limit" in rolled["reason"]
    gate = rolled["gates"][0]
    assert gate["verdict"] == "fail" and gate["source"] == "fleet", gate


def test_redis_restarting_never_stops_serving_and_the_rollout_resumes(
    fleet: Any, repository: Path, fitted: dict[str, Any]
) -> None:
    _, sample = fitted["clf"]
    copy_version(repository, "clf", 1, 2)
    redis, replicas = fleet("[{weight: 25, for: 1s}, {pause: true}, {weight: 75, for: 1s}]")
    with traffic(replicas, sample) as counts:
        wait_for(lambda: agree(replicas, 1, "paused"), "every replica at the pause", timeout_s=60)
        redis.stop()
        wait_for(lambda: all(r.metric("sluice_rollout_store_up") == 0 for r in replicas), "store down seen")
        # Leases lapse on their own clocks: no replica leads while the store is away, none moves a step.
        wait_for(lambda: not any(r.leads() for r in replicas), "every lease lapsed", timeout_s=10)
        served = [dict(c) for c in counts]
        pairs = list(zip(counts, served, strict=True))
        wait_for(
            lambda: all(sum(c.values()) > sum(s.values()) + 20 for c, s in pairs),
            "requests answered while Redis is down",
        )
        assert all(r.weights() == {"1": 75.0, "2": 25.0} and r.rollout()["step"] == 1 for r in replicas)
        assert not any(k.endswith(":500") or k.endswith(":503") for c in counts for k in c), counts
        redis.start()  # empty: the new leader writes its copy of the rollout back
        wait_for(lambda: sum(r.leads() for r in replicas) == 1, "a leader again", timeout_s=15)
        wait_for(lambda: all(r.metric("sluice_rollout_store_up") == 1 for r in replicas), "store up seen")
        assert agree(replicas, 1, "paused")
        assert replicas[2].http.post("/v2/rollouts/clf/promote", headers=AUTH).status_code == 200
        wait_for(
            lambda: all(r.rollout()["phase"] == "succeeded" for r in replicas), "the promotion", timeout_s=60
        )
    assert not any(k.endswith(":500") or k.endswith(":503") for c in counts for k in c), counts
