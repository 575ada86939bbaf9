"""The rollouts file applied to a running gateway: routing policies, shadows, rollout controllers.

It loads the rollouts file (validated whole against the repository; a bad file on reload is rejected with
a log line and ``sluice_rollout_config_rejected_total``, the previous routing stays), keeps per-version gate
windows fed by routed traffic, drives each model's controller from a lifespan task, persists state and
events, and exports weights, phases and gate results. A version gets traffic only once it is READY.

A shared store (several workers on one state file, or replicas on one Redis) gives the rollouts one
leader: the holder of ``store.lease`` (a ``flock``, or Redis's expiring lease). Only it evaluates gates and
advances steps; followers rebuild their controllers whenever the stored state changes and keep trying the
lease; a leader that loses it follows at once. An admin action answered by a follower is stored and the
leader reads it back. With Redis the leader's gates read the whole fleet's windows (``FleetWindow``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable
from typing import Any

from sluice.converters.artifact.errors import ConfigError, NotFoundError
from sluice.converters.artifact.manifest import Manifest
from sluice.monitoring.metrics import Metrics
from sluice.server.registry import ModelRegistry, ModelVersion
from sluice.server.rollouts.comparison import judge_for
from sluice.server.rollouts.controller import ACTIVE, Phase, RolloutController
from sluice.server.rollouts.exported import (
    export_evaluation,
    export_progress,
    export_weights,
    publish_windows,
    status_body,
)
from sluice.server.rollouts.gates import Analyzer, DriftSource, FleetWindow, GateWindow
from sluice.server.rollouts.plan import Digests, Plan, policy_of
from sluice.server.rollouts.prometheus import PrometheusFigures, refresh_due
from sluice.server.rollouts.shadowing import Mirror, OnPair
from sluice.server.rollouts.spec import RolloutFile, Shadow, read_rollouts
from sluice.server.rollouts.store import StateStore
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
        store: StateStore,
        clock: Callable[[], float] = time.monotonic,
        random_source: Callable[[], float] = random.random,
    ) -> None:
        self.path = settings.rollout_file
        self.store = store
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
        self._digests = Digests()
        self._fingerprint: tuple[int, int] | None = None
        self._settling: tuple[int, int] | None = None
        self._task: asyncio.Task[None] | None = None
        # A shared store: only the lease holder (the owner) drives rollouts; one process owns them alone.
        self.shared = store.shared
        self.owner = not self.shared
        self._lock = store.lease
        self._seen_state: object = None

    # ----- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Apply the file (a bad one fails the start: there is no previous routing to keep)."""
        if self.path is None:
            return
        self._fingerprint = self._stat()
        if self.shared:
            await self.store.sync()  # a replica that (re)starts joins the stored rollout at its step
            self._claim()
            self._seen_state = self.store.stat()
        self.metrics.rollout_store_up.set(self.store.up is not False)
        self.metrics.rollout_leader.set(self.owner)
        self.apply(self._read())
        self.tick()
        self._task = asyncio.create_task(self._loop(), name="sluice-rollouts")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for plan in self.plans.values():
            for mirror in [*plan.mirrors, *([plan.rollout_mirror] if plan.rollout_mirror else [])]:
                await mirror.stop()
            if plan.controller is not None and self.owner:
                self._save(plan.controller.model, plan.controller.snapshot())
        if self.path is not None:
            await self.store.close()  # flushes what is queued and hands the lease back
        self.owner = False
        self.metrics.rollout_leader.set(0)

    # ----- one owner among workers ---------------------------------------------------------------

    def _claim(self) -> None:
        """Follow once the lease is lost; lead once it is taken (``store.lease``)."""
        if self.owner and not self._lock.held:
            self.owner = False
            self.metrics.rollout_leader.set(0)
            log.warning("process %d lost the rollouts' lease (%s): following", os.getpid(), self.store.where)
        if not self.owner and self._lock.try_acquire():
            self._follow(force=True)  # carry on from the previous owner's last decisions
            self.owner = True
            self.metrics.rollout_leader.set(1)
            log.info("process %d owns the rollouts (%s)", os.getpid(), self.store.where)
            for plan in self.plans.values():  # the events log says who carries each rollout on
                if plan.controller is not None and plan.controller.phase in ACTIVE:
                    plan.controller.note("leader", f"process {os.getpid()} leads it on from here")
        for model, plan in self.plans.items() if self.owner else ():  # a store that lost its state
            if plan.controller is not None and model not in self.store.load():  # gets ours back
                self._save(model, plan.controller.snapshot())

    def _follow(self, *, force: bool = False) -> None:
        """Rebuild the controllers from the stored state when another process has rewritten it."""
        seen = self.store.stat()
        if seen == self._seen_state and not force:
            return
        self._seen_state = seen
        self.store.forget()
        saved = self.store.load()
        for model, plan in self.plans.items():
            if plan.entry.rollout is not None and (model in saved or plan.controller is None):
                plan.controller = self._controller(model, plan, announce=False)

    def _save(self, model: str, snapshot: dict[str, Any], *, admin: bool = False) -> None:
        self.store.save(model, snapshot, admin=admin)
        if self.shared:
            self._seen_state = self.store.stat()  # our own write: nothing to follow

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                seen = self._stat()
                if seen != self._fingerprint:
                    # Apply a changed file once it stood still for a whole tick: an editor that truncates
                    # then writes is never caught half-way (a half file may still parse).
                    if seen == self._settling:
                        self.reload()
                    self._settling = seen
                if self.shared:
                    await self.store.sync()
                    self.metrics.rollout_store_up.set(self.store.up is not False)
                    self._claim()
                    self._follow()
                    publish_windows(self.store, self.plans, self.window, self._clock)
                await self._refresh_figures()
                self.tick()
            except Exception:  # the loop must survive anything one tick does
                log.exception("rollout tick failed")

    def _stat(self) -> tuple[int, int] | None:
        assert self.path is not None
        with contextlib.suppress(OSError):
            st = self.path.stat()
            return (st.st_mtime_ns, st.st_size)
        return None

    def _read(self) -> RolloutFile:
        assert self.path is not None
        return read_rollouts(self.path, self.registry.on_disk())

    def reload(self) -> bool:
        """Re-read the file; on any problem keep the current routing, log it and count it."""
        if self.path is None:
            raise NotFoundError("no rollouts file is configured (rollout_file / --rollout)")
        self._fingerprint = self._stat()
        if self._fingerprint is None and self.file is not None:
            # Deleting the file is how a user says "stop routing by it"; an empty one is refused.
            self.apply(RolloutFile())
            log.warning("rollouts file %s was removed: routing by it stops", self.path)
            return True
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
            # compared by the kind of model its version's manifest describes
            judge=lambda s: judge_for(
                s.compare, getattr(self._ready(model).get(s.version), "manifest", None)
            ),
        )

    def window(self, model: str, version: int) -> GateWindow:
        found = self._windows.get((model, version))
        return found if found is not None else self._windows.setdefault((model, version), GateWindow())

    def _manifest(self, model: str, version: int) -> Manifest | None:
        return mv.manifest if (mv := self._ready(model).get(version)) is not None else None

    def _ready(self, model: str) -> dict[int, ModelVersion]:
        return {mv.version: mv for mv in self.registry.versions(model)}

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
            f"{model}:{spec.stable}@{self._digests(ready[spec.stable])[:12]}"
            f"->{spec.candidate}@{self._digests(ready[spec.candidate])[:12]}"
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
            lambda v: FleetWindow(self.window(model, v), lambda: self.store.fleet((model, v))),
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
        if self.owner:  # only the leader evaluates
            plans = self.plans.values()
            await refresh_due([(p.figures, p.controller, p.entry.rollout) for p in plans], self._clock())

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
                    export_evaluation(self.metrics, model, controller)
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
            export_weights(self.metrics, model, self._ready(model), weights)
        if controller is not None:
            export_progress(self.metrics, model, controller)
            percent = controller.mirror_percent
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

    def observe(self, mv: ModelVersion, status: int, reason: str, seconds: float, *, fault: bool) -> None:
        """Feed one finished request into its version's gate window (routed traffic only).

        ``fault`` says whether the version is to blame: the service decides (a client's own deadline,
        a malformed body or a disconnect never is), so no client can move a rollout.
        """
        if reason in UNSAMPLED or status == 499 or mv.model not in self.plans:
            return
        self.window(mv.model, mv.version).record(
            self._clock(), error=fault, latency_s=seconds if status == 200 else None
        )

    # ----- admin ---------------------------------------------------------------------------------

    def status(self, model: str | None = None) -> dict[str, Any]:
        shown = {n: p for n, p in self.plans.items() if model is None or n == model}
        if model is not None and not shown:
            raise NotFoundError(f"the rollouts file says nothing about '{model}'")
        body = status_body(shown, lambda name: self.mirrors(name, -1))
        return {"file": str(self.path) if self.path else None, **body, "events": self.store.events(model, 20)}

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
        self._save(model, controller.snapshot(), admin=True)
        if self._route(model, plan):
            self._publish()
        return self.status(model)
