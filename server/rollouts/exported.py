"""What a rollout shows: on ``/metrics`` (weights, phase, step, gate verdicts and values, waiting gates)
and in the admin API's status.

Every process exports what it routes by; only the leader evaluates, so gate counters move on it alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sluice.monitoring.metrics import Metrics
from sluice.server.rollouts.controller import Phase, RolloutController
from sluice.server.rollouts.gates import GateWindow
from sluice.server.rollouts.plan import Plan
from sluice.server.rollouts.shadowing import Mirror
from sluice.server.rollouts.store import StateStore


def export_weights(metrics: Metrics, model: str, versions: Iterable[int], weights: dict[int, float]) -> None:
    for version in set(versions) | set(weights):
        metrics.child(metrics.rollout_weight, model, str(version)).set(weights.get(version, 0))


def export_progress(metrics: Metrics, model: str, controller: RolloutController) -> None:
    """Phase, step and how long each insufficient gate has held the rollout (0 when not waiting)."""
    for phase in Phase:
        metrics.child(metrics.rollout_phase, model, phase.value).set(controller.phase is phase)
    metrics.child(metrics.rollout_step, model).set(controller.step)
    waiting = controller.waiting_gates
    for gate in {r.metric for r in controller.results}:
        metrics.child(metrics.rollout_waiting, model, gate).set(waiting.get(gate, 0.0))


def export_evaluation(metrics: Metrics, model: str, controller: RolloutController) -> None:
    """One evaluation's verdicts (counted) and values (the latest)."""
    for result in controller.results:
        metrics.child(metrics.rollout_gate, model, result.metric, result.verdict).inc()
        if result.value is not None:
            metrics.child(metrics.rollout_gate_value, model, result.metric).set(result.value)


def status_body(plans: dict[str, Plan], mirrors: Callable[[str], list[Mirror]]) -> dict[str, Any]:
    """Each model's weights, shadows, rollout snapshot and what it waits for (the admin API's status)."""
    models = {}
    for name, plan in plans.items():
        c = plan.controller
        models[name] = {
            "weights": {str(v): w for v, w in plan.weights.items()},
            "shadows": [
                {"version": m.version, "percent": m.spec.percent, "in_flight": m.in_flight}
                for m in mirrors(name)
            ],
            "rollout": c.snapshot() if c is not None else None,
            "waiting": plan.waiting or None,
            "waiting_for": (c.waiting_for if c is not None else "") or plan.waiting or None,
        }
    return {"models": models}


def publish_windows(
    store: StateStore,
    plans: dict[str, Plan],
    window: Callable[[str, int], GateWindow],
    clock: Callable[[], float],
) -> None:
    """Hand a shared store this replica's windows of every moving rollout (its leader pools them)."""
    for model, plan in plans.items():
        spec, c = plan.entry.rollout, plan.controller
        if spec is None or c is None or not c.moving:
            continue
        for version in (spec.stable, spec.candidate):
            w, span = window(model, version), spec.analysis.window
            store.publish((model, version), lambda w=w, s=span: w.stats(clock(), s))  # type: ignore[misc]
