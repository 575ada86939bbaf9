"""The inference layer between the endpoints and the models: pick a version, run it, account for it.

Endpoints decode and encode; this module owns what happens in between and what every protocol shares:
deadlines on the monotonic clock, the in-flight count a draining version waits for, and the executor
each version runs on (a dynamic batcher, or a direct call inline or on a worker thread).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from sluice.monitoring.metrics import Metrics
from sluice.server.execution.batching import Batcher, BatchingConfig
from sluice.server.codecs.v2 import InferRequest
from sluice.converters.artifact.errors import DeadlineExceededError, NotReadyError
from sluice.server.registry import ModelRegistry, ModelVersion
from sluice.server.settings import Settings
from sluice.server.execution.tuning import ExecutionPlan, decide_execution

if TYPE_CHECKING:
    from sluice.server.rollouts.shadowing import Tap
    from sluice.server.rollouts.manager import Traffic

log = logging.getLogger("sluice.service")

Outputs = dict[str, np.ndarray]

#: Batch sizes profiled at load (those above the version's max_batch_size are skipped).
PROFILE_SIZES = (1, 8, 32, 128)

#: Inline calls slower than this, ``INLINE_STRIKES`` in a row, move their version to worker threads for
#: good. One slow call proves nothing on a shared machine (the process was descheduled, a GC ran).
INLINE_LIMIT_S = 0.002
INLINE_STRIKES = 3


class DirectExecutor:
    """Runs each request on its own: inline on the event loop, or on a small thread pool."""

    def __init__(
        self, run: Callable[[dict[str, np.ndarray]], Outputs], *, inline: bool, threads: int
    ) -> None:
        self._run = run
        self._threads = threads
        self.inline = inline
        self._strikes = 0
        self._pool = None if inline else ThreadPoolExecutor(threads, thread_name_prefix="sluice-run")

    async def start(self) -> None:
        return None

    async def infer(
        self, inputs: dict[str, np.ndarray], rows: int, *, deadline: float | None = None, priority: int = 0
    ) -> Outputs:
        if self._pool is None:
            started = time.perf_counter()
            outputs = self._run(inputs)
            if time.perf_counter() - started <= INLINE_LIMIT_S:
                self._strikes = 0
            else:
                self._strikes += 1
                if self._strikes >= INLINE_STRIKES:
                    # The load-time profile was wrong for these inputs: stop blocking the event loop.
                    log.warning(
                        "%d calls in a row took over %.0f ms inline; running on threads from now on",
                        INLINE_STRIKES,
                        INLINE_LIMIT_S * 1e3,
                    )
                    self.inline = False
                    self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="sluice-run")
            return outputs
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool, self._run, inputs)
        if deadline is None:
            return await future
        try:
            return await asyncio.wait_for(future, max(deadline - time.monotonic(), 0.0))
        except TimeoutError:
            raise DeadlineExceededError("deadline exceeded while the model ran") from None

    async def stop(self, drain_timeout_s: float = 5.0) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


class InferenceService:
    """Resolves the version a request goes to and runs it under its deadline."""

    def __init__(self, settings: Settings, registry: ModelRegistry, metrics: Metrics) -> None:
        self.settings = settings
        self.registry = registry
        self.metrics = metrics
        self.accepting = True
        self.traffic: Traffic | None = None  # routing and shadows from the rollouts file (sluice.server.rollouts.manager)

    def resolve(
        self,
        model: str,
        version: str | None = None,
        *,
        label: str | None = None,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
    ) -> tuple[ModelVersion, str]:
        """The version to serve and the route reason: ``explicit`` (a pinned version), ``label``, or for an
        unpinned request with ``headers`` the router's ``override``, ``sticky``, ``split`` or ``default``.
        """
        if version is not None:
            return self.registry.resolve(model, version), "explicit"
        traffic = self.traffic
        if label is not None:
            named = traffic.label(model, label) if traffic is not None else None
            return self.registry.resolve(model, str(named) if named is not None else label), "label"
        if traffic is not None:
            if headers is not None:
                # `query or {}` would ask the lazy query string its length, i.e. parse it every request.
                route = traffic.route(model, headers, query if query is not None else {})
                if route is not None:
                    return self.registry.resolve(model, str(route.version)), route.reason
            stable = traffic.label(model, "stable")
            if stable is not None:
                return self.registry.resolve(model, str(stable)), "default"
        return self.registry.resolve(model, None), "default"

    async def run(self, mv: ModelVersion, request: InferRequest) -> Outputs:
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
        if self.traffic is None:
            return []
        mirrors = self.traffic.mirrors(mv.model, mv.version)
        if not mirrors:
            return []
        ready = {v.version: v for v in self.registry.versions(mv.model)}
        taps = []
        for mirror in mirrors:
            target = ready.get(mirror.version)
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

    # ----- version lifecycle hooks (called by the registry) -------------------------------------

    async def attach(self, mv: ModelVersion) -> None:
        """Give a freshly loaded version its executor; it serves only after this returns."""
        b = mv.batching
        plan: ExecutionPlan | None = None
        if b.execution == "auto":
            sizes = [n for n in PROFILE_SIZES if n <= b.max_batch_size] or [1]
            plan = await asyncio.to_thread(
                decide_execution,
                mv.runtime.run,
                lambda rows: mv.runtime.example_inputs(rows, mv.inputs),
                sizes=sizes,
            )
        inline = b.execution == "inline" or (plan is not None and plan.inline)
        batchable = bool(mv.inputs) and all(t.shape[:1] == (-1,) for t in mv.inputs)
        describe: dict[str, Any] = {"execution": "inline" if inline else "thread", "chosen_by": b.execution}
        if plan is not None:
            describe["profile"] = plan.to_json()
        if b.enabled and batchable:
            preferred = b.preferred_batch_sizes or (plan.preferred_batch_sizes if plan else [])
            config = BatchingConfig(
                max_batch_size=b.max_batch_size,
                max_queue_delay_us=b.max_queue_delay_us,
                preferred_batch_sizes=tuple(n for n in preferred if n <= b.max_batch_size),
                max_queue_size=b.max_queue_size,
                instances=b.instances,
            )
            mv.executor = Batcher(
                mv.runtime.run,
                config,
                inline=inline,
                observer=BatchMetrics(self.metrics, mv.model, str(mv.version)),
                name=f"{mv.model}/{mv.version}",
            )
            describe.update(batching=True, preferred_batch_sizes=list(config.preferred_batch_sizes))
        else:
            mv.executor = DirectExecutor(mv.runtime.run, inline=inline, threads=b.instances)
            describe["batching"] = False
        mv.execution = describe
        await mv.executor.start()
        log.info("%s/%d runs %s", mv.model, mv.version, describe)
        self.metrics.child(self.metrics.version_ready, mv.model, str(mv.version)).set(1)

    async def detach(self, mv: ModelVersion, *, forget: bool = True) -> None:
        """Stop a retired load's executor; ``forget`` its series unless a new load of it serves on."""
        if mv.executor is not None:
            await mv.executor.stop(self.settings.drain_timeout_s)
        if forget:
            self.metrics.forget(mv.model, str(mv.version))


class BatchMetrics:
    """Feeds one version's batcher events into its Prometheus series (children cached once)."""

    def __init__(self, metrics: Metrics, model: str, version: str) -> None:
        self._metrics = metrics
        self._labels = (model, version)
        self._rows = metrics.child(metrics.batch_rows, model, version)
        self._compute = metrics.child(metrics.compute_seconds, model, version)
        self._queue_time = metrics.child(metrics.queue_seconds, model, version)
        self._depth = metrics.child(metrics.queue_rows, model, version)

    def on_batch(self, rows: int, requests: int, queue_s: list[float], compute_s: float) -> None:
        self._rows.observe(rows)
        self._compute.observe(compute_s)
        for waited in queue_s:
            self._queue_time.observe(waited)

    def on_shed(self, reason: str) -> None:
        self._metrics.child(self._metrics.shed, *self._labels, reason).inc()

    def on_queue(self, rows: int) -> None:
        self._depth.set(rows)
