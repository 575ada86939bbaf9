"""The rollout controller: one model's progressive rollout as a state machine on an injectable clock.

    Idle -> Shadowing -> Progressing(step i) <-> Paused -> Succeeded;  any active state -> Failed

Every ``interval`` the gates are evaluated over the trailing window. A step advances once its ``for`` has
passed and an evaluation within the step passed. A failed evaluation counts towards ``failure_limit``
(over the whole rollout); reaching it, or the ``timeout``, triggers ``on_failure``: ``rollback`` sends the
candidate's weight and shadow to 0 at once (Failed; not retried until ``retry``) or ``pause`` holds.
After the last step ``promote: auto`` succeeds, ``manual`` waits for a promote. Every transition is
emitted as an event carrying the gate results that caused it. The controller does no I/O: the caller
persists ``snapshot()`` and the events.

No gate holds a rollout silently: while evaluations are held by gates that stay ``insufficient`` for
``analysis.insufficient_after``, ``waiting_for`` names them (status, a ``waiting`` event, a metric). Gates
that need pairs (``shadow_disagreement``) keep being fed in weight steps: ``mirror_percent`` mirrors a
sample of the stable's requests to the candidate (``rollout.shadow.percent``, else ``PAIRS_PERCENT``).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any

from sluice.converters.artifact.errors import BadRequestError
from sluice.server.rollouts.gates import FAIL, INSUFFICIENT, PASS, GateResult, combine
from sluice.server.rollouts.spec import RolloutSpec, Step


class Phase(StrEnum):
    IDLE = "idle"
    SHADOWING = "shadowing"
    PROGRESSING = "progressing"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


ACTIVE = frozenset({Phase.SHADOWING, Phase.PROGRESSING, Phase.PAUSED})
#: Share of the stable's requests mirrored to the candidate in weight steps when a gate needs pairs.
PAIRS_PERCENT = 10.0

Event = dict[str, Any]


class RolloutController:
    """Drives one rollout; ``tick()`` is called often, evaluations happen every ``analysis.interval``."""

    def __init__(
        self,
        model: str,
        spec: RolloutSpec,
        identity: str,
        *,
        clock: Callable[[], float],
        analyze: Callable[[float], list[GateResult]],
        emit: Callable[[Event], None],
        saved: dict[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.spec = spec
        self.identity = identity
        self._clock = clock
        self._analyze = analyze
        self._emit = emit
        self.steps: list[Step] = spec.schedule()
        now = clock()
        self.phase = Phase.IDLE
        self.step = 0
        self.failures = 0
        self.paused_by: str | None = None
        self.reason = ""
        self.started = now
        self.step_started = now
        self.last_eval = -float("inf")
        self.verdict: str | None = None
        self.passed_in_step = False
        self.results: list[GateResult] = []
        #: Since when evaluations have been held by insufficient gates (None: not held).
        self.held_since: float | None = None
        self.waiting_for = ""
        if saved is not None and saved.get("identity") == identity:
            self._restore(saved, now)

    # ----- what routing reads --------------------------------------------------------------------

    def _effective(self) -> Step | None:
        """The last shadow or weight step at or before the current one (pauses keep what was before)."""
        for step in reversed(self.steps[: self.step + 1]):
            if step.pause is None:
                return step
        return None

    @property
    def weight(self) -> float:
        """The candidate's routed percentage now."""
        if self.phase is Phase.SUCCEEDED:
            return 100.0
        step = self._effective()
        if self.phase not in ACTIVE or step is None or step.weight is None:
            return 0.0
        return step.weight

    @property
    def shadow_percent(self) -> float:
        step = self._effective()
        if self.phase not in ACTIVE or step is None or step.shadow is None:
            return 0.0
        return step.shadow

    @property
    def mirror_percent(self) -> float:
        """Percent of the stable's requests copied to the candidate: the shadow step's, or in a weight
        step a sample for the gates that need pairs."""
        if self.shadow_percent > 0:
            return self.shadow_percent
        pairs = any(g.metric == "shadow_disagreement" for g in self.spec.gates)
        if not pairs or self.phase not in ACTIVE or not 0 < self.weight < 100:
            return 0.0
        return self.spec.shadow.percent if self.spec.shadow is not None else PAIRS_PERCENT

    @property
    def moving(self) -> bool:
        """Shadowing or progressing: evaluating and able to advance."""
        return self.phase in (Phase.SHADOWING, Phase.PROGRESSING)

    # ----- the loop ------------------------------------------------------------------------------

    def tick(self) -> None:
        now = self._clock()
        if self.phase is Phase.IDLE:
            self.started = now
            self._event("started", now, f"rolling out {self.spec.candidate} over {self.spec.stable}")
            self._enter(0, now, "first step")
            return
        if self.phase not in ACTIVE:
            return
        timeout = self.spec.timeout
        if timeout is not None and self.phase is not Phase.PAUSED and now - self.started >= timeout:
            self._on_failure(now, f"timeout: still rolling out after {timeout:g}s")
            return
        if self.phase is Phase.PAUSED:
            step = self.steps[self.step] if self.step < len(self.steps) else None
            timed = step is not None and step.for_s is not None and self.paused_by == "step"
            if timed and step is not None and now - self.step_started >= (step.for_s or 0):
                self._enter(self.step + 1, now, "timed pause over")
            return
        a = self.spec.analysis
        if now - self.last_eval >= a.interval:
            self._evaluate(now)
            if not self.moving:
                return
        for_s = self.steps[self.step].for_s or 0.0
        if self.passed_in_step and now - self.step_started >= for_s:
            self._enter(self.step + 1, now, f"step {self.step} held {for_s:g}s with passing gates")

    def _evaluate(self, now: float) -> None:
        self.last_eval = now
        self.results = self._analyze(now)
        verdict = combine(self.results, self.spec.analysis.on_insufficient)
        changed = verdict != self.verdict
        self.verdict = verdict
        if verdict == FAIL:
            self.failures += 1
            limit = self.spec.analysis.failure_limit
            self._event("gate_failed", now, f"evaluation failed ({self.failures} of {limit})")
            if self.failures >= limit:
                self._on_failure(now, f"failure limit reached: {self.failures} failed evaluations")
            return
        if verdict == PASS:
            self.passed_in_step = True
        if changed:
            self._event("evaluation", now, verdict)
        self._held(now, verdict)

    def _held(self, now: float, verdict: str) -> None:
        """Say, once past ``insufficient_after``, which gates keep the rollout waiting."""
        if verdict != INSUFFICIENT:
            self.held_since, self.waiting_for = None, ""
            return
        if self.held_since is None:
            self.held_since = now
        held = now - self.held_since
        if held < self.spec.analysis.insufficient_after:
            return
        gates = [r for r in self.results if r.verdict == INSUFFICIENT and not r.dry_run]
        what = "; ".join(f"{r.metric} ({r.detail})" for r in gates)
        announce = not self.waiting_for
        self.waiting_for = f"{what} for {held:.0f}s"
        if announce:
            self._event("waiting", now, f"waiting for {what} since {held:.0f}s ago")

    @property
    def waiting_gates(self) -> dict[str, float]:
        """Seconds each insufficient gate has held the rollout, once it says it is waiting."""
        if not self.waiting_for or self.held_since is None:
            return {}
        held = self._clock() - self.held_since
        return {r.metric: held for r in self.results if r.verdict == INSUFFICIENT and not r.dry_run}

    def _enter(self, index: int, now: float, why: str) -> None:
        self.step = index
        self.step_started = now
        self.passed_in_step = False
        if index >= len(self.steps):
            if self.spec.promote == "auto":
                self._succeed(now, f"{why}; last step done")
            else:
                self.phase, self.paused_by = Phase.PAUSED, "promotion"
                self._event("awaiting_promotion", now, f"{why}; promote: manual")
            return
        step = self.steps[index]
        self.paused_by = None
        if step.pause is not None:
            self.phase, self.paused_by = Phase.PAUSED, "step"
        else:
            self.phase = Phase.SHADOWING if step.shadow is not None else Phase.PROGRESSING
        self._event("step", now, why)

    def _succeed(self, now: float, why: str) -> None:
        self.phase, self.paused_by, self.reason = Phase.SUCCEEDED, None, why
        self._event(
            "succeeded",
            now,
            why,
            action=f"candidate {self.spec.candidate} takes 100 %: set stable: {self.spec.candidate} "
            "and remove the rollout in the rollouts file",
        )

    def _on_failure(self, now: float, why: str) -> None:
        if self.spec.on_failure == "pause":
            self.phase, self.paused_by, self.reason = Phase.PAUSED, "failure", why
            self._event("paused", now, why)
            return
        self.phase, self.paused_by, self.reason = Phase.FAILED, None, why
        self._event(
            "rolled_back", now, why, action=f"all traffic back to {self.spec.stable}; run retry to try again"
        )

    # ----- admin actions -------------------------------------------------------------------------

    def promote(self, *, full: bool = False) -> None:
        now = self._clock()
        if self.phase not in ACTIVE and self.phase is not Phase.IDLE:
            raise BadRequestError(f"rollout of '{self.model}' is {self.phase}: nothing to promote")
        if full or self.step >= len(self.steps) - 1:
            self._succeed(now, "promoted " + ("in full " if full else "") + "by the admin API")
        else:
            self._enter(self.step + 1, now, "promoted by the admin API")

    def pause(self) -> None:
        if self.phase not in (Phase.SHADOWING, Phase.PROGRESSING):
            raise BadRequestError(f"rollout of '{self.model}' is {self.phase}: nothing to pause")
        now = self._clock()
        self.phase, self.paused_by = Phase.PAUSED, "admin"
        self._event("paused", now, "paused by the admin API")

    def resume(self) -> None:
        if self.phase is not Phase.PAUSED:
            raise BadRequestError(f"rollout of '{self.model}' is {self.phase}: nothing to resume")
        now = self._clock()
        if self.paused_by == "promotion":
            raise BadRequestError(f"rollout of '{self.model}' waits for a promote, not a resume")
        if self.paused_by == "step":
            self._enter(self.step + 1, now, "resumed past a pause step by the admin API")
            return
        if self.paused_by == "failure":
            self.failures = 0
        self.paused_by = None
        self.phase = Phase.SHADOWING if self.steps[self.step].shadow is not None else Phase.PROGRESSING
        self._event("resumed", now, "resumed by the admin API")

    def abort(self) -> None:
        if self.phase not in ACTIVE and self.phase is not Phase.IDLE:
            raise BadRequestError(f"rollout of '{self.model}' is {self.phase}: nothing to abort")
        now = self._clock()
        self.phase, self.paused_by, self.reason = Phase.FAILED, None, "aborted by the admin API"
        self._event("rolled_back", now, self.reason, action=f"all traffic back to {self.spec.stable}")

    def retry(self) -> None:
        if self.phase is not Phase.FAILED:
            raise BadRequestError(f"rollout of '{self.model}' is {self.phase}: only a failed rollout retries")
        self.phase, self.failures, self.verdict, self.reason = Phase.IDLE, 0, None, ""
        self.tick()

    def note(self, kind: str, reason: str) -> None:
        """Record an event about the rollout that is not a transition (a new leader takes it over)."""
        self._event(kind, self._clock(), reason)

    # ----- persistence -----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        now = self._clock()
        return {
            "identity": self.identity,
            "model": self.model,
            "stable": self.spec.stable,
            "candidate": self.spec.candidate,
            "phase": self.phase.value,
            "step": self.step,
            "steps": len(self.steps),
            "weight": self.weight,
            "shadow_percent": self.shadow_percent,
            "failures": self.failures,
            "paused_by": self.paused_by,
            "reason": self.reason,
            "elapsed_s": round(now - self.started, 3),
            "step_elapsed_s": round(now - self.step_started, 3),
            "verdict": self.verdict,
            "gates": [r.to_json() for r in self.results],
            "waiting_for": self.waiting_for or None,
        }

    def _restore(self, saved: dict[str, Any], now: float) -> None:
        self.phase = Phase(saved["phase"])
        self.step = min(int(saved["step"]), len(self.steps))
        self.failures = int(saved["failures"])
        self.paused_by = saved.get("paused_by")
        self.reason = saved.get("reason", "")
        self.started = now - float(saved.get("elapsed_s", 0.0))
        self.step_started = now - float(saved.get("step_elapsed_s", 0.0))
        # What the last evaluation said, so a replica that follows shows it too.
        self.verdict = saved.get("verdict")
        self.results = [GateResult(**g) for g in saved.get("gates") or []]
        self.waiting_for = saved.get("waiting_for") or ""

    def _event(self, kind: str, now: float, reason: str, **extra: Any) -> None:
        event: Event = {
            "model": self.model,
            "rollout": self.identity,
            "event": kind,
            "phase": self.phase.value,
            "step": self.step,
            "weight": self.weight,
            "shadow_percent": self.shadow_percent,
            "failures": self.failures,
            "reason": reason,
            **extra,
        }
        if kind in ("gate_failed", "evaluation", "rolled_back", "paused", "succeeded", "step", "waiting"):
            event["gates"] = [r.to_json() for r in self.results]
        self._emit(event)
