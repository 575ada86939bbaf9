"""The background task's pacing: rests in proportion to each step, and a smaller share when saturated."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from sluice.monitoring.layout import Layout, WatchOptions
from sluice.monitoring.metrics import Metrics
from sluice.monitoring.monitor import SATURATED_LAG_S, SATURATED_SHARE, Monitor
from tests.unit.test_detector_batches import FEATURES, _profile


def run_steps(monitor: Monitor, busy_s: float, late_s: float, steps: int) -> list[float]:
    """Steps of ``busy_s`` each, each starting ``late_s`` after its rest should have ended: the rests."""
    now, rests = 100.0, []
    for _ in range(steps):
        started = now
        now = started + busy_s
        rest = monitor.pace(started, now)
        rests.append(rest)
        now += rest + late_s
    return rests


def test_an_idle_loop_gets_the_configured_share() -> None:
    monitor = Monitor(Metrics(), cpu_share=0.1)
    rests = run_steps(monitor, busy_s=0.001, late_s=0.0001, steps=50)
    assert rests[-1] == pytest.approx(0.009)  # 1 ms of work, 9 ms of rest: 10 %
    assert not monitor.saturated


def test_a_saturated_loop_halves_the_share_and_recovers() -> None:
    monitor = Monitor(Metrics(), cpu_share=0.1)
    rests = run_steps(monitor, busy_s=0.001, late_s=3 * SATURATED_LAG_S, steps=50)
    share = 0.1 * SATURATED_SHARE
    assert monitor.saturated
    assert rests[-1] == pytest.approx(0.001 * (1 - share) / share)
    run_steps(monitor, busy_s=0.001, late_s=0.0, steps=50)
    assert not monitor.saturated


def test_a_full_share_never_rests() -> None:
    monitor = Monitor(Metrics(), cpu_share=1.0)
    assert run_steps(monitor, busy_s=0.001, late_s=0.01, steps=5) == [0.0] * 5


def test_a_drifted_streams_alarms_are_all_counted_in_metrics_and_its_incident() -> None:
    """A drifted stream alarms every few rows; the counts must survive being recorded per stream."""
    rng = np.random.default_rng(3)
    layout = Layout.from_signature([("x", "FP32", (-1, len(FEATURES)), FEATURES)], [])

    async def main() -> tuple[Monitor, dict[str, Any]]:
        monitor = Monitor(Metrics(), cpu_share=1.0)
        await monitor.watch("m", 1, layout, _profile(rng), WatchOptions())
        await monitor.start()
        for _ in range(300):
            x = rng.normal(size=(10, len(FEATURES))).astype(np.float32)
            x[:, 2] += 3.0  # far off: the mean CUSUM alarms every few rows
            monitor.observe("m", 1, {"x": x}, None, 0.005, False)
        for _ in range(1000):  # bounded: the background task drains the queue
            body = monitor.snapshot("m", 1)
            if body["pending"] == 0 and body["observed"]["rows"] == 3000:
                break
            await asyncio.sleep(0.01)
        await monitor.stop()
        return monitor, body

    monitor, body = asyncio.run(main())
    detectors = body["features"]["x2"]["detectors"]
    alarms = {d["signal"]: d["alarms"] for d in detectors}
    assert alarms["mean"] > 50  # dense: many alarms per chunk
    (incident,) = body["incidents"]
    assert incident["subject"] == "x2" and incident["alarms"] == sum(alarms.values())
    text = monitor.metrics.exposition().decode()
    for signal, count in alarms.items():
        line = (
            f'sluice_drift_alarms_total{{feature="x2",model="m",signal="{signal}",version="1"}} {count:.1f}'
        )
        assert (line in text) == (count > 0), line
