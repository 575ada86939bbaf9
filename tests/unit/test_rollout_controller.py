"""The controller and its gates on a fake clock: pass, fail, insufficient, failure limit, timeout, pauses."""

from __future__ import annotations

from typing import Any

import pytest

from sluice.converters.artifact.errors import BadRequestError
from sluice.server.rollouts.controller import Phase, RolloutController
from sluice.server.rollouts.gates import Analyzer, GateWindow, Stats, check, combine
from sluice.server.rollouts.spec import Gate, RolloutSpec


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Drift:
    def __init__(self, alarms: int) -> None:
        self.alarms = alarms
        self.asked: list[tuple[str, int, float]] = []

    def incidents(self, model: str, version: int, since_monotonic: float) -> int:
        self.asked.append((model, version, since_monotonic))
        return self.alarms


def spec(**overrides: Any) -> RolloutSpec:
    body: dict[str, Any] = {
        "stable": 1,
        "candidate": 2,
        "steps": [{"weight": 10, "for": "10s"}, {"weight": 50, "for": "10s"}],
        "analysis": {"interval": "2s", "window": "10s", "min_samples": 20, "failure_limit": 2},
        "gates": [{"metric": "error_rate", "max": 0.05, "max_increase_over_stable": 0.02}],
    }
    body.update(overrides)
    return RolloutSpec.model_validate(body)


class Harness:
    """A controller with real windows, traffic fed per fake second."""

    def __init__(self, rollout: RolloutSpec, drift: Drift | None = None, saved: dict[str, Any] | None = None):
        self.clock = FakeClock()
        self.windows = {1: GateWindow(), 2: GateWindow()}
        self.events: list[dict[str, Any]] = []
        self.owed = 0.0
        analyzer = Analyzer("m", rollout, self.windows.__getitem__, drift)
        self.controller = RolloutController(
            "m", rollout, "m:1->2", clock=self.clock, analyze=analyzer, emit=self.events.append, saved=saved
        )

    def run(self, seconds: float, *, candidate_errors: float = 0.0, per_s: int = 20) -> None:
        """Advance the clock in 0.5 s ticks, recording ``per_s`` requests a second on each version."""
        for _ in range(int(seconds * 2)):
            self.clock.now += 0.5
            self.owed += per_s / 2
            n, self.owed = int(self.owed), self.owed - int(self.owed)
            for i in range(n):
                self.windows[1].record(self.clock.now, error=False, latency_s=0.01)
                bad = i < round(candidate_errors * n)
                self.windows[2].record(self.clock.now, error=bad, latency_s=0.01)
            self.controller.tick()

    def kinds(self) -> list[str]:
        return [e["event"] for e in self.events]


def test_healthy_rollout_walks_every_step_and_succeeds() -> None:
    h = Harness(spec())
    h.run(0.5)
    assert h.controller.phase is Phase.PROGRESSING and h.controller.weight == 10
    h.run(10)
    assert h.controller.step == 1 and h.controller.weight == 50
    h.run(10.5)
    assert h.controller.phase is Phase.SUCCEEDED and h.controller.weight == 100
    assert h.kinds() == ["started", "step", "evaluation", "step", "succeeded"]
    assert "set stable: 2" in h.events[-1]["action"]


def test_a_step_never_advances_before_its_for() -> None:
    h = Harness(spec())
    h.run(9.5)
    assert h.controller.step == 0


def test_failures_count_to_the_limit_then_roll_back_with_the_gate_values() -> None:
    h = Harness(spec())
    h.run(2.5, candidate_errors=0.3)
    assert h.controller.phase is Phase.PROGRESSING and h.controller.failures == 1
    h.run(2, candidate_errors=0.3)
    assert h.controller.phase is Phase.FAILED and h.controller.weight == 0
    last = h.events[-1]
    assert last["event"] == "rolled_back" and "failure limit" in last["reason"]
    gate = last["gates"][0]
    assert (
        gate["metric"] == "error_rate" and gate["verdict"] == "fail" and gate["value"] == pytest.approx(0.3)
    )
    h.run(30)  # no flapping: a failed rollout stays failed
    assert h.controller.phase is Phase.FAILED


def test_on_failure_pause_holds_and_resume_clears_the_count() -> None:
    h = Harness(spec(on_failure="pause"))
    h.run(4.5, candidate_errors=0.3)
    assert h.controller.phase is Phase.PAUSED and h.controller.weight == 10
    h.controller.resume()
    assert h.controller.phase is Phase.PROGRESSING and h.controller.failures == 0


def test_insufficient_holds_by_default_and_never_passes_silently() -> None:
    h = Harness(spec())
    h.run(30, per_s=1)  # 20 samples per 10 s window are needed; one a second gives 10 or 11
    assert h.controller.step == 0 and h.controller.phase is Phase.PROGRESSING
    assert h.events[-1]["gates"][0]["verdict"] == "insufficient"
    assert h.controller.results[0].detail in ("10 of 20 candidate samples", "11 of 20 candidate samples")
    assert h.controller.failures == 0


@pytest.mark.parametrize(
    ("mode", "phase", "failures"), [("pass", Phase.SUCCEEDED, 0), ("fail", Phase.FAILED, 2)]
)
def test_on_insufficient_pass_or_fail(mode: str, phase: Phase, failures: int) -> None:
    rollout = spec(
        analysis={
            "interval": "2s",
            "window": "10s",
            "min_samples": 20,
            "failure_limit": 2,
            "on_insufficient": mode,
        }
    )
    h = Harness(rollout)
    h.run(25, per_s=0)
    assert h.controller.phase is phase and h.controller.failures == failures


def test_timeout_fails_the_rollout() -> None:
    h = Harness(spec(timeout="5s"))
    h.run(6, per_s=0)
    assert h.controller.phase is Phase.FAILED and h.controller.reason.startswith("timeout")


def test_pause_step_waits_for_promote_and_manual_promotion() -> None:
    steps = [
        {"shadow": 100, "for": "4s"},
        {"weight": 20, "for": "4s"},
        {"pause": True},
        {"weight": 60, "for": "4s"},
    ]
    h = Harness(spec(steps=steps, promote="manual", gates=[{"metric": "error_rate", "max": 0.05}]))
    h.run(0.5)
    assert h.controller.phase is Phase.SHADOWING and h.controller.shadow_percent == 100
    assert h.controller.weight == 0
    h.run(10)
    assert h.controller.phase is Phase.PAUSED and h.controller.step == 2 and h.controller.weight == 20
    h.run(30)
    assert h.controller.step == 2
    h.controller.promote()
    assert h.controller.phase is Phase.PROGRESSING and h.controller.weight == 60
    h.run(6)
    assert h.controller.phase is Phase.PAUSED and h.controller.paused_by == "promotion"
    with pytest.raises(BadRequestError, match="waits for a promote"):
        h.controller.resume()
    h.controller.promote()
    assert h.controller.phase is Phase.SUCCEEDED


def test_admin_pause_resume_abort_retry_and_full_promote() -> None:
    h = Harness(spec())
    h.run(1)
    h.controller.pause()
    h.run(30)
    assert h.controller.phase is Phase.PAUSED and h.controller.step == 0
    h.controller.resume()
    h.controller.abort()
    assert h.controller.phase is Phase.FAILED and h.controller.weight == 0
    with pytest.raises(BadRequestError):
        h.controller.pause()
    h.controller.retry()
    assert h.controller.phase is Phase.PROGRESSING and h.controller.step == 0
    h.controller.promote(full=True)
    assert h.controller.phase is Phase.SUCCEEDED


def test_restore_resumes_the_same_step_only_for_the_same_identity() -> None:
    h = Harness(spec())
    h.run(12)
    assert h.controller.step == 1
    saved = h.controller.snapshot()
    again = Harness(spec(), saved=saved)
    assert again.controller.phase is Phase.PROGRESSING and again.controller.step == 1
    other = Harness(spec(), saved={**saved, "identity": "m:1->3"})
    assert other.controller.phase is Phase.IDLE


def test_gate_checks_one_by_one() -> None:
    healthy = Stats(requests=100, errors=1, latencies_s=(0.01,) * 99, compared=100, disagreements=1)
    worse = Stats(requests=100, errors=4, latencies_s=(0.03,) * 96, compared=100, disagreements=5)
    few = Stats(requests=5, errors=0, latencies_s=(0.01,) * 5)
    relative = Gate(metric="error_rate", max_increase_over_stable=0.02)
    assert check(relative, worse, healthy, 50).verdict == "fail"
    assert check(relative, healthy, few, 50).detail == "5 of 50 stable samples"
    latency = Gate(metric="latency_p99_ms", max=100, max_ratio_to_stable=1.5)
    assert check(latency, worse, healthy, 50).verdict == "fail"
    assert check(latency, healthy, worse, 50).verdict == "pass"
    assert check(Gate(metric="latency_p99_ms", max=20), worse, healthy, 50).detail.endswith("over the max 20")
    disagreement = Gate(metric="shadow_disagreement", max=0.03, dry_run=True)
    result = check(disagreement, worse, healthy, 50)
    assert result.verdict == "fail" and result.dry_run
    assert combine([result], "hold") == "pass"  # dry-run gates never fail a rollout
    drift = Gate(metric="drift", max_alarms=0)
    assert check(drift, healthy, healthy, 50).detail == "insufficient: no monitor"
    assert check(drift, healthy, healthy, 50, drift=1).verdict == "fail"


def test_drift_gate_asks_the_monitor_about_the_candidate() -> None:
    drift = Drift(alarms=2)
    gates = [{"metric": "error_rate", "max": 0.05}, {"metric": "drift", "max_alarms": 1}]
    h = Harness(spec(gates=gates), drift=drift)
    h.run(4.5)
    assert h.controller.phase is Phase.FAILED
    assert drift.asked[0][:2] == ("m", 2)


def test_a_gate_insufficient_past_insufficient_after_says_what_it_waits_for() -> None:
    rollout = spec(
        analysis={"interval": "2s", "window": "10s", "min_samples": 20, "insufficient_after": "20s"},
    )
    h = Harness(rollout)
    h.run(18, per_s=1)
    assert h.controller.waiting_for == "" and "waiting" not in h.kinds()
    h.run(6, per_s=1)
    waiting = [e for e in h.events if e["event"] == "waiting"]
    assert len(waiting) == 1, h.kinds()
    assert (
        waiting[0]["reason"].startswith("waiting for error_rate (")
        and "candidate samples" in waiting[0]["reason"]
    )
    assert h.controller.snapshot()["waiting_for"].startswith("error_rate (")
    assert h.controller.waiting_gates["error_rate"] >= 20
    h.run(12, per_s=20)  # traffic arrives: the gate passes, the rollout moves, nothing waits any more
    assert h.controller.step >= 1 and h.controller.waiting_for == "" and h.controller.waiting_gates == {}


def test_weight_steps_keep_feeding_a_gate_that_needs_pairs() -> None:
    pairs = {"metric": "shadow_disagreement", "max": 0.05}
    h = Harness(spec(gates=[pairs]))
    h.run(0.5)
    assert h.controller.weight == 10 and h.controller.mirror_percent == 10.0  # PAIRS_PERCENT
    sampled = spec(gates=[pairs], shadow={"version": 2, "percent": 25})
    assert Harness(sampled).controller.mirror_percent == 0.0  # idle: nothing mirrored yet
    h2 = Harness(sampled)
    h2.run(0.5)
    assert h2.controller.mirror_percent == 25.0
    h3 = Harness(spec())  # no gate needs pairs: weight steps mirror nothing
    h3.run(0.5)
    assert h3.controller.mirror_percent == 0.0


def test_a_follower_shows_the_leaders_last_verdicts() -> None:
    h = Harness(spec())
    h.run(2.5)
    saved = h.controller.snapshot()
    follower = Harness(spec(), saved=saved).controller
    assert follower.verdict == "pass" and [r.metric for r in follower.results] == ["error_rate"]
