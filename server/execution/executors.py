"""How a loaded version runs: the ``Executor`` protocol, direct execution, and the factory that chooses.

Every version gets one executor when it is loaded, before it serves: a dynamic ``Batcher``, or a
``DirectExecutor`` that runs each request on its own, inline on the event loop or on a small thread pool.
Which one, and inline or on threads, is decided here from the version's batching settings and a short
load-time profile (``sluice.server.execution.tuning``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from sluice.converters.artifact.errors import DeadlineExceededError, OverloadedError
from sluice.converters.artifact.manifest import TensorSpec
from sluice.monitoring.metrics import Metrics
from sluice.server.execution.batches import RunModel, Tensors
from sluice.server.execution.batching import Batcher
from sluice.server.execution.runtime import OnnxRuntime
from sluice.server.execution.tuning import ExecutionPlan, decide_execution
from sluice.server.settings import BatchingSettings

log = logging.getLogger("sluice.execution")

#: Batch sizes profiled at load (those above the version's max_batch_size are skipped).
PROFILE_SIZES = (1, 8, 32, 128)

#: Inline calls slower than this, ``INLINE_STRIKES`` in a row, move their version to worker threads for
#: good. One slow call proves nothing on a shared machine (the process was descheduled, a GC ran).
INLINE_LIMIT_S = 0.002
INLINE_STRIKES = 3


class Executor(Protocol):
    """What runs one version's requests: a ``Batcher`` or a ``DirectExecutor``."""

    async def start(self) -> None: ...

    async def infer(
        self, inputs: Tensors, rows: int, *, deadline: float | None = None, priority: int = 0
    ) -> Tensors: ...

    async def stop(self, drain_timeout_s: float = 5.0) -> None: ...

    def overloaded(self) -> str | None:
        """Why a new request should be shed right now (before its body is read), or None."""
        ...

    def shed(self, reason: str) -> OverloadedError:
        """Count one request shed for ``reason`` and the error that answers it."""
        ...


class DirectExecutor:
    """Runs each request on its own: inline on the event loop, or on a small thread pool."""

    def __init__(self, run: RunModel, *, inline: bool, threads: int) -> None:
        self._run = run
        self._threads = threads
        self.inline = inline
        self._strikes = 0
        self._pool = None if inline else ThreadPoolExecutor(threads, thread_name_prefix="sluice-run")

    async def start(self) -> None:
        return None

    async def infer(
        self, inputs: Tensors, rows: int, *, deadline: float | None = None, priority: int = 0
    ) -> Tensors:
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

    def overloaded(self) -> str | None:
        return None  # no queue of its own to judge by; max_connections bounds what waits

    def shed(self, reason: str) -> OverloadedError:
        return OverloadedError(f"overloaded ({reason})", details={"reason": reason})


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


class ExecutorFactory:
    """Chooses and starts the executor of each freshly loaded version (the registry calls ``create``)."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        decide: Callable[..., ExecutionPlan] = decide_execution,
    ) -> None:
        self._metrics = metrics
        self._decide = decide

    async def create(
        self,
        model: str,
        version: int,
        runtime: OnnxRuntime,
        inputs: Sequence[TensorSpec],
        batching: BatchingSettings,
    ) -> tuple[Executor, dict[str, Any]]:
        """A started executor for the version, and how it runs and why (for the config endpoint)."""
        b = batching
        plan: ExecutionPlan | None = None
        if b.execution == "auto":
            sizes = [n for n in PROFILE_SIZES if n <= b.max_batch_size] or [1]
            plan = await asyncio.to_thread(
                self._decide,
                runtime.run,
                lambda rows: runtime.example_inputs(rows, inputs),
                sizes=sizes,
            )
        inline = b.execution == "inline" or (plan is not None and plan.inline)
        batchable = bool(inputs) and all(t.shape[:1] == (-1,) for t in inputs)
        describe: dict[str, Any] = {"execution": "inline" if inline else "thread", "chosen_by": b.execution}
        if plan is not None:
            describe["profile"] = plan.to_json()
        executor: Executor
        if b.enabled and batchable:
            preferred = b.preferred_batch_sizes or (plan.preferred_batch_sizes if plan else [])
            config = b.model_copy(
                update={
                    "preferred_batch_sizes": tuple(sorted({n for n in preferred if n <= b.max_batch_size}))
                }
            )
            executor = Batcher(
                runtime.run,
                config,
                inline=inline,
                observer=BatchMetrics(self._metrics, model, str(version)),
                name=f"{model}/{version}",
            )
            describe.update(batching=True, preferred_batch_sizes=list(config.preferred_batch_sizes))
        else:
            executor = DirectExecutor(runtime.run, inline=inline, threads=b.instances)
            describe["batching"] = False
        await executor.start()
        log.info("%s/%d runs %s", model, version, describe)
        return executor, describe
