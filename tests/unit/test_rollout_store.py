"""Choosing the rollout store, where local state lives, the Redis lease's clock, and fleet-wide windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sluice.converters.artifact.errors import ConfigError
from sluice.server.rollouts.gates import FleetWindow, GateWindow, Stats, merged
from sluice.server.rollouts.redis_store import LEASE_S, SYNC_S, RedisLease, RedisStore
from sluice.server.rollouts.store import RolloutStore, open_store
from sluice.server.settings import Settings, load_settings


def test_the_state_directory_sits_beside_the_rollouts_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rollouts = tmp_path / "conf" / "rollouts.yaml"
    monkeypatch.chdir(tmp_path / "..")
    store = open_store(Settings(rollout_file=Path(tmp_path.name) / "conf" / "rollouts.yaml"))
    assert isinstance(store, RolloutStore) and not store.shared
    assert store.where == str(rollouts.parent / ".sluice")
    given = open_store(Settings(rollout_file=rollouts, state_dir=tmp_path / "s", workers=2))
    assert given.where == str(tmp_path / "s") and given.shared


def test_a_redis_url_selects_the_shared_store_and_anything_else_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLUICE_ROLLOUT_STORE", "redis://:secret@redis:6379/2")
    store = open_store(load_settings())
    assert isinstance(store, RedisStore) and store.shared
    assert store.where == "redis:6379/2"  # never the password
    monkeypatch.setenv("SLUICE_ROLLOUT_STORE", "http://redis:6379")
    with pytest.raises(ConfigError, match="rollout_store"):
        load_settings()


def test_the_lease_lapses_on_its_own_clock() -> None:
    now = [100.0]
    lease = RedisLease(lambda: now[0])
    assert not lease.held and not lease.try_acquire()
    lease.renewed(100.0, taken=True)
    assert lease.held and lease.try_acquire() and not lease.try_acquire()  # True once
    now[0] += LEASE_S - SYNC_S - 0.01
    assert lease.held
    now[0] += 0.02  # no renewal reached Redis: this replica stops leading before Redis lets another in
    assert not lease.held


def test_fleet_windows_add_up_and_weigh_each_replicas_latencies() -> None:
    rng = np.random.default_rng(0)
    fast = rng.uniform(0.001, 0.010, 9000)  # a busy replica
    slow = rng.uniform(0.100, 0.200, 1000)  # a quiet one, 10 % of the traffic, all slow
    local = Stats(requests=9000, errors=9, latencies_s=tuple(fast))
    sample = np.sort(slow)[np.linspace(0, 999, 100).astype(int)]  # published: a sample of 100
    other = Stats(requests=1000, errors=50, latencies_s=tuple(sample), latency_samples=1000)
    both = merged(local, [other])
    assert (both.requests, both.errors, both.latency_count) == (10_000, 59, 10_000)
    true_p99 = float(np.percentile(np.concatenate([fast, slow]), 99))
    assert both.p99_ms == pytest.approx(true_p99 * 1e3, rel=0.05)
    window = GateWindow()
    window.record(1.0, error=True, latency_s=None)
    assert FleetWindow(window, lambda: [other]).stats(1.0, 10.0).requests == 1001
    assert merged(local, []) is local
