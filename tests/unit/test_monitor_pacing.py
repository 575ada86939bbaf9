"""The background task's pacing: rests in proportion to each step, and a smaller share when saturated."""

from __future__ import annotations

import pytest

from monitoring.metrics import Metrics
from monitoring.monitor import SATURATED_LAG_S, SATURATED_SHARE, Monitor


def run_steps(monitor: Monitor, busy_s: float, late_s: float, steps: int) -> list[float]:
    """Steps of ``busy_s`` each, each starting ``late_s`` after its rest should have ended: the rests."""
    now, rests = 100.0, []
    for _ in range(steps):
        started = now
        now = started + busy_s
        rest = monitor._rest_after(started, now)
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


def test_a_steps_alarms_are_counted_once_per_stream() -> None:
    from monitoring.cusum import CUSUM
    from monitoring.streams import Alarm, Stream

    monitor = Monitor(Metrics(), clock=lambda: 100.0)
    mean = Stream("drift", "f1", "mean", CUSUM())
    variance = Stream("drift", "f1", "variance", CUSUM())
    target = type("Target", (), {"model": "m", "version": 1})()
    alarms = [Alarm(mean, i, 10.0 + i) for i in range(5)] + [Alarm(variance, 7, 30.0)]
    monitor._record(target, alarms)  # type: ignore[arg-type]
    (incident,) = monitor.incidents_log.of("m", 1)
    assert incident.alarms == 6 and incident.signals == {"mean", "variance"}
    assert incident.started_at == 10.0 and incident.last_alarm_at == 30.0
    text = monitor.metrics.exposition().decode()
    assert 'sluice_drift_alarms_total{feature="f1",model="m",signal="mean",version="1"} 5.0' in text
    assert 'sluice_drift_alarms_total{feature="f1",model="m",signal="variance",version="1"} 1.0' in text
