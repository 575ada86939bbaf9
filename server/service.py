"""The one inference layer between the endpoints and the models: decide, decode, run, shadow, account.

An endpoint (HTTP today; any protocol) parses its path into a ``Target``, hands over a ``decode`` callable
that turns its body into an ``InferRequest`` against the chosen version's signature, and gets back a
``Served``: the version, the route reason, the request and its outputs, or the error to render. Everything
every protocol shares happens here, once: the routing decision (``sluice.server.routing.decide``),
deadlines on the monotonic clock, the in-flight count a draining version waits for, shadow copies, and the
accounting of each finished request (Prometheus, the rollout gates' windows, the monitor).
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import numpy as np

from sluice.converters.artifact.errors import (
    BadRequestError,
    DeadlineExceededError,
    InternalError,
    NotReadyError,
    OverloadedError,
    SluiceError,
)
from sluice.monitoring.metrics import Metrics
from sluice.monitoring.monitor import Monitor
from sluice.server.codecs import InferRequest
from sluice.server.registry import ModelRegistry, ModelVersion
from sluice.server.rollouts.manager import RolloutManager
from sluice.server.rollouts.shadowing import Tap
from sluice.server.routing import Routing, Target, decide, lookup
from sluice.server.settings import Settings

log = logging.getLogger("sluice.service")

Outputs = dict[str, np.ndarray]
#: Reads and decodes the request's body against the version chosen for it.
Decode = Callable[[ModelVersion], Awaitable[InferRequest]]
#: Awaits the model's answer on the endpoint's terms (an HTTP endpoint stops waiting when its client
#: disconnects, raising ``ClientDisconnectedError``).
Guard = Callable[[Awaitable[Outputs]], Awaitable[Outputs]]


@dataclass(slots=True)
class Served:
    """What one inference request came to: ``outputs`` on success, else ``error``.

    ``version`` is None only when no version could be chosen (an unknown model, no ready version).
    """

    version: ModelVersion | None
    reason: str
    request: InferRequest | None = None
    outputs: Outputs | None = None
    error: SluiceError | None = None


class ShedLog:
    """At most one log line per ``every_s`` for shed requests: a summary by reason, never one per request.

    Under overload a line per shed request is itself load (87k lines in 15 s were seen); the counts are
    in ``sluice_batch_shed_total`` and the requests counter's ``shed`` outcome either way.
    """

    def __init__(self, every_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._every_s = every_s
        self._clock = clock
        self._counts: dict[str, int] = {}
        self._since = clock()

    def record(self, model: str, reason: str) -> None:
        key = f"{model}: {reason}"
        self._counts[key] = self._counts.get(key, 0) + 1
        now = self._clock()
        if now - self._since >= self._every_s:
            summary = ", ".join(f"{n} {k}" for k, n in sorted(self._counts.items()))
            log.warning(
                "shed %d requests in the last %.0f s (%s)",
                sum(self._counts.values()),
                now - self._since,
                summary,
            )
            self._counts.clear()
            self._since = now


async def _unguarded(work: Awaitable[Outputs]) -> Outputs:
    return await work


class InferenceService:
    """Decides the version each request goes to, runs it under its deadline and accounts for it."""

    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        routing: Routing,
        rollouts: RolloutManager,
        metrics: Metrics,
        monitor: Monitor | None,
        *,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.routing = routing
        self.rollouts = rollouts
        self.metrics = metrics
        self.monitor = monitor
        self._draw = draw
        self._shed = ShedLog()
        self.accepting = True

    def version_for(self, target: Target) -> ModelVersion:
        """The version a path names, or the model's default (no routing policy: for metadata endpoints)."""
        route = lookup(self.routing.table, target)
        return self._serving(target.model, route.version)

    def _serving(self, model: str, version: int) -> ModelVersion:
        mv = self.registry.serving(model, version)
        if mv is None:  # retired between the table's publication and now
            raise NotReadyError(f"model '{model}' version {version} is not ready")
        return mv

    async def infer(
        self,
        target: Target,
        headers: Mapping[str, str],
        query: Mapping[str, str],
        decode: Decode,
        guard: Guard = _unguarded,
    ) -> Served:
        """Serve one request end to end; never raises for what the request or the model did."""
        started = time.perf_counter()
        served = Served(None, "default")
        try:
            route = decide(self.routing.table, target, headers, query, self._draw)
            served.reason = route.reason
            mv = served.version = self._serving(target.model, route.version)
            busy = mv.executor.overloaded()
            if busy is not None:  # shed before the body is read: under overload a shed must be cheap
                raise mv.executor.shed(busy)
            try:
                request = served.request = await decode(mv)
            except RecursionError as exc:  # the decoders are iterative where it matters; a safety net
                raise BadRequestError("the request body is nested too deeply to read") from exc
            served.outputs = await guard(self._run(mv, request))
        except SluiceError as exc:
            served.error = exc
        except Exception as exc:
            log.exception("unexpected error serving %s", target.model)
            served.error = InternalError("internal server error")
            served.error.__cause__ = exc
        self._account(served, time.perf_counter() - started)
        return served

    async def _run(self, mv: ModelVersion, request: InferRequest) -> Outputs:
        if not self.accepting:
            raise NotReadyError("the gateway is shutting down")
        timeout_us = (
            request.timeout_us if request.timeout_us is not None else self.settings.default_timeout_us
        )
        deadline = None if timeout_us is None else time.monotonic() + timeout_us / 1e6
        taps = self._mirror(mv, request)
        mv.enter()
        self.metrics.in_flight.inc()
        result: Outputs | None = None
        try:
            result = await mv.executor.infer(
                request.inputs, request.rows, deadline=deadline, priority=request.priority
            )
            return result
        finally:
            self.metrics.in_flight.dec()
            mv.leave()
            for tap in taps:  # hands over the outcome; never waits for the copy
                tap.primary_done(result)

    def _mirror(self, mv: ModelVersion, request: InferRequest) -> list[Tap]:
        """Start this request's shadow copies (their own tasks), each on a READY version."""
        mirrors = self.rollouts.mirrors(mv.model, mv.version)
        if not mirrors:
            return []
        taps = []
        for mirror in mirrors:
            target = self.registry.serving(mv.model, mirror.version)
            if target is None:
                continue
            tap = mirror.offer(request.inputs, request.rows, functools.partial(self._shadow, target))
            if tap is not None:
                taps.append(tap)
        return taps

    async def _shadow(
        self, mv: ModelVersion, inputs: dict[str, np.ndarray], rows: int, deadline: float
    ) -> Outputs:
        mv.enter()
        try:
            result: Outputs = await mv.executor.infer(inputs, rows, deadline=deadline)
            return result
        finally:
            mv.leave()

    def _account(self, served: Served, seconds: float) -> None:
        """Count one finished request (and its latency if it succeeded); tell the gates and the monitor.

        Only the version's own faults count against it: a 5xx, except a deadline the client set itself
        (``client_timeout``: a client could otherwise roll a healthy candidate back by asking for 1 us).
        Client errors (4xx) and disconnects say nothing about the model.
        """
        mv, error = served.version, served.error
        status = 200 if error is None else error.status
        if error is not None and status == 500:  # the server's own fault: the one kind worth a log line
            log.error("%s: %s", mv.model if mv else "?", error.message, exc_info=error.__cause__ or error)
        if isinstance(error, OverloadedError):
            self._shed.record(mv.model if mv else "-", str(error.details.get("reason", error.code)))
        if mv is None:
            self.metrics.child(self.metrics.unrouted, str(status)).inc()
            return
        client_deadline = (
            isinstance(error, DeadlineExceededError)
            and served.request is not None
            and served.request.timeout_us is not None
        )
        fault = status >= 500 and not client_deadline
        outcome = "client_timeout" if client_deadline else None
        self.metrics.observe_request(mv.model, str(mv.version), status, served.reason, seconds, outcome)
        self.rollouts.observe(mv, status, served.reason, seconds, fault=fault)
        if self.monitor is not None and (status == 200 or fault):
            inputs = served.request.inputs if served.request is not None else None
            self.monitor.observe(mv.model, mv.version, inputs, served.outputs, seconds, fault)
        elif self.monitor is not None and 400 <= status < 499:  # the client's: its own stream only
            self.monitor.observe_client_error(mv.model, mv.version)
