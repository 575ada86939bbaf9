"""The rollouts file applied to a running gateway: routing policies, shadows, rollout controllers.

One ``RolloutManager`` per gateway. It loads the rollouts file (validated whole against the repository; a bad
file on reload is rejected with a log line and ``sluice_rollout_config_rejected_total``, and the previous
routing stays), keeps per-version gate windows fed by routed traffic, drives each model's controller from
a lifespan task, persists state and events, and exports weights, phases and gate results.
A version gets traffic only once it is READY (loaded and warmed by the registry): until then its share
goes to the stable version and a rollout waits before its first step.

With several workers (``workers > 1``) the rollouts have one owner: the worker holding an exclusive
``flock`` on ``<state_dir>/controller.lock``. Only it evaluates gates and advances steps; the others
(followers) rebuild their controllers from the state file whenever it changes and route with those
weights, and retry the lock (``sluice.server.rollouts.ownership``) so a dead owner is replaced. An admin
action answered by a follower is applied there and written to the state file, which the owner then reads
back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sluice.converters.artifact.errors import ConfigError, NotFoundError
from sluice.monitoring.metrics import Metrics
from sluice.server.registry import ModelRegistry, ModelVersion
from sluice.server.rollouts.controller import Phase, RolloutController
from sluice.server.rollouts.gates import Analyzer, DriftSource, GateWindow
from sluice.server.rollouts.ownership import OwnerLock
from sluice.server.rollouts.plan import Plan, policy_of
from sluice.server.rollouts.prometheus import PrometheusFigures
from sluice.server.rollouts.shadowing import Mirror, OnPair
from sluice.server.rollouts.spec import RolloutFile, Shadow, read_rollouts
from sluice.server.rollouts.store import RolloutStore
from sluice.server.routing import Routing
from sluice.server.settings import Settings

log = logging.getLogger("sluice.rollout")

#: Route reasons that are not a random sample of users: left out of gate statistics.
UNSAMPLED = frozenset({"explicit", "label", "override"})
TICK_S = 0.05


class RolloutManager:
    """Routing policies, shadows and rollouts of every model named in the rollouts file.

    It publishes each model's ``Policy`` (weights, override, sticky key, labels) to ``routing`` whenever
    the file or a rollout's step changes; the decision itself is ``sluice.server.routing.decide``.
    """

    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        routing: Routing,
        metrics: Metrics,
        *,
        drift: DriftSource | None,
        on_pair: OnPair | None,
        clock: Callable[[], float] = time.monotonic,
        random_source: Callable[[], float] = random.random,
    ) -> None:
        self.path = settings.rollout_file
        self.store = RolloutStore(settings.state_dir)
        self.registry = registry
        self.routing = routing
        self.metrics = metrics
        self.drift = drift
        self.on_pair = on_pair  # shadows hand each compared pair to the monitor
        self._clock = clock
        self._random = random_source
        self.file: RolloutFile | None = None
        self.plans: dict[str, Plan] = {}
        self._windows: dict[tuple[str, int], GateWindow] = {}
        self._digests: dict[tuple[Path, int], str] = {}
        self._fingerprint: tuple[int, int] | None = None
        self._task: asyncio.Task[None] | None = None
        # Several workers: only the lock holder (the owner) drives rollouts; one process owns them alone.
        self.shared = settings.workers > 1
        self.owner = not self.shared
        self._lock = OwnerLock(self.store.directory)
        self._seen_state: tuple[int, int] | None = None

    # ----- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Apply the file (a bad one fails the start: there is no previous routing to keep)."""
        if self.path is None:
            return
        self._fingerprint = self._stat()
        if self.shared:
            self._claim()
            self._seen_state = self.store.stat()
        self.apply(self._read())
        self.tick()
        self._task = asyncio.create_task(self._loop(), name="sluice-rollouts")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for plan in self.plans.values():
            for mirror in plan.mirrors:
                await mirror.stop()
        for plan in self.plans.values():
            if plan.controller is not None and self.owner:
                self._save(plan.controller.model, plan.controller.snapshot())
        if self._lock.held:
            self._lock.release()
            self.owner = False

    # ----- one owner among workers ---------------------------------------------------------------

    def _claim(self) -> None:
        """Become the owner if the lock is free (see ``sluice.server.rollouts.ownership``)."""
        if self.owner or not self._lock.try_acquire():
            return
        self._follow(force=True)  # carry on from the previous owner's last decisions
        self.owner = True
        log.info("worker %d owns the rollouts (%s)", os.getpid(), self._lock.path)

    def _follow(self, *, force: bool = False) -> None:
        """Rebuild the controllers from the state file when another worker has rewritten it."""
        seen = self.store.stat()
        if seen == self._seen_state and not force:
            return
        self._seen_state = seen
        self.store.forget()
        for model, plan in self.plans.items():
            if plan.entry.rollout is not None:
                plan.controller = self._controller(model, plan, announce=False)

    def _save(self, model: str, snapshot: dict[str, Any]) -> None:
        self.store.save(model, snapshot)
        if self.shared:
            self._seen_state = self.store.stat()  # our own write: nothing to follow

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                if self._stat() != self._fingerprint:
                    self.reload()
                if self.shared:
                    self._claim()
                    self._follow()
                await self._refresh_figures()
                self.tick()
            except Exception:  # the loop must survive anything one tick does
                log.exception("rollout tick failed")

    def _stat(self) -> tuple[int, int] | None:
        assert self.path is not None
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def _read(self) -> RolloutFile:
        assert self.path is not None
        return read_rollouts(self.path, self.registry.on_disk())

    def reload(self) -> bool:
        """Re-read the file; on any problem keep the current routing, log it and count it."""
        if self.path is None:
            raise NotFoundError("no rollouts file is configured (rollout_file / --rollout)")
        self._fingerprint = self._stat()
        try:
            file = self._read()
        except ConfigError as exc:
            self.metrics.rollout_config_rejected.inc()
            log.error("rollouts file rejected, the previous routing stays: %s", exc.message)
            raise
        self.apply(file)
        log.info("rollouts file %s applied (%d models)", self.path, len(file.models))
        return True

    def apply(self, file: RolloutFile) -> None:
        old = self.plans
        self.file = file
        self.plans = {}
        for model, entry in file.models.items():
            plan = Plan(entry)
            previous = old.get(model)
            plan.mirrors = [self._mirror(model, s) for s in entry.shadows]
            if previous is not None and previous.controller is not None and entry.rollout is not None:
                plan.controller = self._controller(model, plan, previous.controller.snapshot())
            self.plans[model] = plan
            self._route(model, plan)
        self._publish()

    # ----- rollouts ------------------------------------------------------------------------------

    def _mirror(self, model: str, spec: Shadow) -> Mirror:
        return Mirror(
            model,
            spec,
            metrics=self.metrics,
            window=self.window(model, spec.version),
            clock=self._clock,
            random_source=self._random,
            on_pair=self.on_pair,
        )

    def window(self, model: str, version: int) -> GateWindow:
        found = self._windows.get((model, version))
        if found is None:
            found = self._windows[(model, version)] = GateWindow()
        return found

    def _ready(self, model: str) -> dict[int, ModelVersion]:
        return {mv.version: mv for mv in self.registry.versions(model)}

    def _digest(self, mv: ModelVersion) -> str:
        if mv.manifest.sha256:
            return mv.manifest.sha256
        key = (mv.path, id(mv))
        if key not in self._digests:
            self._digests[key] = hashlib.sha256((mv.path / "model.onnx").read_bytes()).hexdigest()
        return self._digests[key]

    def _controller(
        self, model: str, plan: Plan, saved: dict[str, Any] | None = None, *, announce: bool = True
    ) -> RolloutController | None:
        """The model's controller, restored from ``saved`` or the state file when it is the same rollout.

        ``None`` (and ``plan.waiting`` says why) until both versions are READY: their artifacts' digests
        are part of the rollout's identity, and a candidate gets no traffic before it is warm.
        """
        spec = plan.entry.rollout
        assert spec is not None
        ready = self._ready(model)
        for version, role in ((spec.stable, "stable"), (spec.candidate, "candidate")):
            if version not in ready:
                plan.waiting = f"{role} version {version} is not ready"
                return None
        plan.waiting = ""
        identity = (
            f"{model}:{spec.stable}@{self._digest(ready[spec.stable])[:12]}"
            f"->{spec.candidate}@{self._digest(ready[spec.candidate])[:12]}"
        )
        if saved is None or saved.get("identity") != identity:
            saved = self.store.load().get(model)
        plan.figures = None
        if spec.analysis.source == "prometheus":
            plan.figures = PrometheusFigures(
                model, spec, on_error=lambda why: self._prometheus_failed(model, why)
            )
        analyzer = Analyzer(
            model,
            spec,
            lambda v: self.window(model, v),
            self.drift,
            figures=plan.figures.stats if plan.figures is not None else None,
        )
        controller = RolloutController(
            model, spec, identity, clock=self._clock, analyze=analyzer, emit=self._emit, saved=saved
        )
        if controller.phase is not Phase.IDLE and announce:
            log.info(
                "%s: rollout %s resumes as %s at step %d", model, identity, controller.phase, controller.step
            )
        return controller

    def _prometheus_failed(self, model: str, why: str) -> None:
        self.metrics.child(self.metrics.rollout_prometheus_errors, model).inc()
        log.warning("%s: rollout gate figures from prometheus unavailable: %s", model, why)

    async def _refresh_figures(self) -> None:
        """Read Prometheus (in worker threads) for every rollout whose next evaluation is due."""
        due = []
        now = self._clock()
        for plan in self.plans.values():
            c, spec = plan.controller, plan.entry.rollout
            if plan.figures is None or c is None or spec is None or not self.owner or not c.moving:
                continue
            if now - c.last_eval >= spec.analysis.interval:
                due.append(plan.figures.refresh())
        if due:
            await asyncio.gather(*due)

    def _emit(self, event: dict[str, Any]) -> None:
        line = self.store.append(event)
        log.info("rollout %s: %s (%s)", line["model"], line["event"], line["reason"])

    def tick(self) -> None:
        changed = False
        for model, plan in self.plans.items():
            if plan.entry.rollout is not None and plan.controller is None:
                plan.controller = self._controller(model, plan)
            controller = plan.controller
            if controller is None or not self.owner:  # a follower routes by the owner's decisions
                changed |= self._route(model, plan)
                continue
            before = (controller.phase, controller.step, controller.last_eval)
            controller.tick()
            if (controller.phase, controller.step, controller.last_eval) != before:
                self._save(model, controller.snapshot())
                if controller.last_eval != plan.last_eval:
                    plan.last_eval = controller.last_eval
                    for result in controller.results:
                        self.metrics.child(
                            self.metrics.rollout_gate, model, result.metric, result.verdict
                        ).inc()
                        if result.value is not None:
                            self.metrics.child(self.metrics.rollout_gate_value, model, result.metric).set(
                                result.value
                            )
            changed |= self._route(model, plan)
        if changed:
            self._publish()

    def _publish(self) -> None:
        self.routing.publish_policies(
            {model: plan.policy for model, plan in self.plans.items() if plan.policy is not None}
        )

    def _route(self, model: str, plan: Plan) -> bool:
        """Rebuild the model's policy and rollout shadow from the file and the controller's state.

        True when the policy changed (``tick`` then publishes the new table once).
        """
        entry, controller = plan.entry, plan.controller
        weights, policy = policy_of(plan)
        changed = weights != plan.weights or policy != plan.policy
        if changed:
            plan.weights, plan.policy = weights, policy
            for version in {v for v in self._ready(model)} | set(weights):
                self.metrics.child(self.metrics.rollout_weight, model, str(version)).set(
                    weights.get(version, 0)
                )
        if controller is not None:
            for phase in Phase:
                self.metrics.child(self.metrics.rollout_phase, model, phase.value).set(
                    controller.phase is phase
                )
            self.metrics.child(self.metrics.rollout_step, model).set(controller.step)
            percent = controller.shadow_percent
            if percent > 0:
                spec = entry.rollout.shadow_settings(percent) if entry.rollout else None
                if spec is not None and (plan.rollout_mirror is None or plan.rollout_mirror.spec != spec):
                    if plan.rollout_mirror is None:
                        plan.rollout_mirror = self._mirror(model, spec)
                    plan.rollout_mirror.spec = spec
            elif plan.rollout_mirror is not None:
                plan.rollout_mirror.spec = plan.rollout_mirror.spec.model_copy(update={"percent": 0.0})
        return changed

    # ----- the request path ----------------------------------------------------------------------

    def mirrors(self, model: str, primary: int) -> list[Mirror]:
        plan = self.plans.get(model)
        if plan is None:
            return []
        found = [m for m in plan.mirrors if m.version != primary]
        if plan.rollout_mirror is not None and plan.rollout_mirror.version != primary:
            found.append(plan.rollout_mirror)
        return found

    def observe(self, mv: ModelVersion, status: int, reason: str, seconds: float) -> None:
        """Feed one finished request into its version's gate window (routed traffic only)."""
        if reason in UNSAMPLED or status == 499 or mv.model not in self.plans:
            return
        error = status >= 500
        self.window(mv.model, mv.version).record(
            self._clock(), error=error, latency_s=seconds if status == 200 else None
        )

    # ----- admin ---------------------------------------------------------------------------------

    def status(self, model: str | None = None) -> dict[str, Any]:
        models = {}
        for name, plan in self.plans.items():
            if model is not None and name != model:
                continue
            c = plan.controller
            models[name] = {
                "weights": {str(v): w for v, w in plan.weights.items()},
                "shadows": [
                    {"version": m.version, "percent": m.spec.percent, "in_flight": m.in_flight}
                    for m in self.mirrors(name, -1)
                ],
                "rollout": c.snapshot() if c is not None else None,
                "waiting": plan.waiting or None,
            }
        if model is not None and model not in models:
            raise NotFoundError(f"the rollouts file says nothing about '{model}'")
        return {
            "file": str(self.path) if self.path else None,
            "models": models,
            "events": self.store.events(model, limit=20),
        }

    def act(self, model: str, action: str, *, full: bool = False) -> dict[str, Any]:
        plan = self.plans.get(model)
        if plan is None or plan.controller is None:
            reason = plan.waiting if plan is not None and plan.waiting else "no rollout"
            raise NotFoundError(f"'{model}' has no running rollout ({reason})")
        controller = plan.controller
        if action == "promote":
            controller.promote(full=full)
        else:
            getattr(controller, action)()
        self._save(model, controller.snapshot())
        if self._route(model, plan):
            self._publish()
        return self.status(model)
