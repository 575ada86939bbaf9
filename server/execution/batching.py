"""Dynamic batching: concurrent requests to one model version share one execution.

A ``Batcher`` keeps a bounded queue of requests (two priority levels), forms batches by size, by preferred
size or when the oldest request's delay runs out, concatenates their inputs along axis 0, runs the model
(on its own worker threads, or inline on the event loop for models cheaper than a thread hop) and hands
each caller a view of exactly its own rows.

Scheduling is callback-driven, not a polling task: an arrival schedules one ``_pump`` per loop iteration
(``call_soon``, so requests decoded in the same iteration join one batch), a finished batch pumps again,
and two kinds of ``loop.call_later`` timers cover time: one for the oldest request's queue delay and one
per request with a deadline. Times are read from the injected ``clock``; a timer is armed for
``when - clock()`` seconds of loop time and, when it fires, re-checks ``clock()`` and re-arms if early.
That is exact when ``clock`` is the loop's own clock (``time.monotonic`` under asyncio, the default),
and tests run on a loop whose ``time()`` is a fake clock they advance, so the real timer path runs
deterministically with no sleeps. Timer precision is the loop's (asyncio ~1 ms, uvloop ~0.6 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from sluice.converters.artifact.errors import (
    DeadlineExceededError,
    NotReadyError,
    OverloadedError,
)
from sluice.server.execution.batches import (
    BatchObserver,
    DelayGuard,
    NullObserver,
    Pending,
    RunModel,
    Tensors,
    batch_error,
    check_rows,
    run_batch,
)
from sluice.server.settings import BatchingSettings

log = logging.getLogger("sluice.batching")

# A timer may fire a hair before its due time on our clock (float rounding between the clock and the loop's
# time); within this margin it counts as due, so a frozen test clock cannot make it re-arm forever.
_EARLY_S = 1e-6


class Batcher:
    """Dynamic batcher of one model version; see the module docstring for how it schedules.

    A batch is the longest prefix of the queue (high priority first, then FIFO) that fits in
    ``max_batch_size`` rows; a request larger than that runs alone. It leaves when

    - the queue holds at least ``max_batch_size`` rows (waiting cannot make it bigger);
    - it holds at least a preferred size: it is then cut to the shortest prefix reaching the largest
      preferred size it reached, so that batch size is what the model runs;
    - the oldest waiting request has waited ``max_queue_delay_us`` (with 0: at once), or the batcher
      is draining for ``stop()``;

    and only while fewer than ``instances`` batches execute, so with a zero delay requests gather while
    every instance is busy. High-priority requests (``priority == 1``) go first and can starve normal
    ones under sustained high-priority load. An admitted request only leaves the queue by being taken,
    by its deadline (``DeadlineExceededError``), by its caller's cancellation, or by ``stop()``.

    Inputs must be validated against the signature already; a failing batch fails each request (500).
    """

    def __init__(
        self,
        execute: RunModel,
        config: BatchingSettings,
        *,
        inline: bool = False,
        clock: Callable[[], float] = time.monotonic,
        observer: BatchObserver | None = None,
        name: str = "",
    ) -> None:
        self._execute = execute
        self.config = config
        self.inline = inline
        self.name = name
        self._clock = clock
        self._observer: BatchObserver = observer if observer is not None else NullObserver()
        self._instances = 1 if inline else config.instances
        self._delay_s = config.max_queue_delay_us / 1e6
        self._preferred = tuple(sorted(set(config.preferred_batch_sizes)))
        wait_ms = config.max_queue_wait_ms
        self._guard = DelayGuard(None if wait_ms is None else max(wait_ms / 1e3, self._delay_s))
        self._high: deque[Pending] = deque()
        self._normal: deque[Pending] = deque()
        self._queued_rows = 0
        self._running: set[tuple[Pending, ...]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._pump_scheduled = False
        self._delay_timer: asyncio.TimerHandle | None = None
        self._delay_when = 0.0
        self._accepting = False
        self._draining = False
        self._closed = False
        self._idle: asyncio.Future[None] | None = None

    @property
    def queued_rows(self) -> int:
        """Rows waiting in the queue (not those executing)."""
        return self._queued_rows

    @property
    def in_flight(self) -> int:
        """Batches executing now."""
        return len(self._running)

    async def start(self) -> None:
        """Bind to the running loop and create the worker threads; the app's lifespan calls it."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        if not self.inline:
            prefix = f"sluice-batch-{self.name}" if self.name else "sluice-batch"
            self._pool = ThreadPoolExecutor(self._instances, thread_name_prefix=prefix)
        self._accepting = True

    async def stop(self, drain_timeout_s: float = 5.0) -> None:
        """Refuse new requests, let queued work finish within the timeout, then fail what is left.

        Draining ignores ``max_queue_delay_us`` (nothing new will join). Requests still queued or
        executing at the timeout get ``NotReadyError("shutting down")``; a worker thread that is still
        running is not waited for (it cannot be interrupted) and its results are dropped.
        """
        loop = self._loop
        if loop is None or self._draining:
            return
        self._accepting = False
        self._draining = True
        try:
            if self._queued_rows or self._running:
                self._idle = loop.create_future()
                self._pump()
                # The drain limit is on the loop's clock, which is the batcher's clock in service and tests.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._idle), drain_timeout_s)
        finally:
            self._close()

    def _close(self) -> None:
        self._closed = True
        self._cancel_delay_timer()
        leftovers = [*self._high, *self._normal]
        self._high.clear()
        self._normal.clear()
        for batch in self._running:
            leftovers.extend(batch)
        for request in leftovers:
            self._unqueue(request, in_deque=False, notify=False)
            if not request.future.done():
                request.future.set_exception(NotReadyError(f"{self._label}shutting down"))
                self._observer.on_shed("shutdown")
        self._observer.on_queue(self._queued_rows)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def infer(
        self, inputs: Tensors, rows: int, *, deadline: float | None = None, priority: int = 0
    ) -> Tensors:
        """Queue ``inputs`` (``rows`` rows in every tensor) and return exactly their rows of the outputs.

        ``deadline`` is absolute on the batcher's clock. Raises ``OverloadedError`` when the queue is
        full, ``DeadlineExceededError`` when the deadline passes before the request is taken,
        ``NotReadyError`` before ``start()`` or after ``stop()``, ``InternalError`` when its batch fails.
        """
        loop = self._loop
        if loop is None or not self._accepting:
            raise NotReadyError(f"{self._label}{'not started' if loop is None else 'shutting down'}")
        check_rows(inputs, rows)  # a wrong count would hand other callers' rows to this one
        now = self._clock()
        if deadline is not None and deadline <= now:
            self._observer.on_shed("deadline")
            raise DeadlineExceededError(f"{self._label}deadline passed before the request was queued")
        # An empty queue admits any request: one larger than the whole queue would otherwise be refused
        # forever with a retryable 503; the body-size limit bounds it instead.
        if self._queued_rows and self._queued_rows + rows > self.config.max_queue_size:
            self._observer.on_shed("queue_full")
            raise OverloadedError(
                f"{self._label}queue full ({self._queued_rows} rows waiting)",
                retry_after_s=1,
                details={"reason": "queue_full"},
            )
        if self.overloaded() is not None:  # admission by time: see ``overloaded``
            raise self.shed("queue_delay")

        future: asyncio.Future[Tensors] = loop.create_future()
        request = Pending(inputs, rows, future, deadline, now, priority == 1)
        (self._high if request.high else self._normal).append(request)
        self._queued_rows += rows
        self._observer.on_queue(self._queued_rows)
        if deadline is not None:
            request.timer = loop.call_later(deadline - now, self._check_deadline, request)
        if not self._pump_scheduled:
            self._pump_scheduled = True
            loop.call_soon(self._pump)
        try:
            return await future
        except asyncio.CancelledError:
            if request.queued:  # the caller went away before its batch was taken: forget it
                self._unqueue(request)
                self._observer.on_shed("disconnected")
                self._check_idle()
            raise

    def overloaded(self) -> str | None:
        """``"queue_delay"`` while the queue holds a standing delay (``DelayGuard``), else None."""
        if not self._guard.shedding:
            return None
        if not self._queued_rows:
            self._guard.reset()  # drained: admit again
            return None
        return "queue_delay"

    def shed(self, reason: str) -> OverloadedError:
        """Count one request shed for ``reason`` and the error that answers it (503 + Retry-After)."""
        self._observer.on_shed(reason)
        message = f"{self._label}overloaded: requests wait over {self.config.max_queue_wait_ms} ms"
        return OverloadedError(message, retry_after_s=1, details={"reason": reason})

    # ----- queue -----------------------------------------------------------------------------------

    @property
    def _label(self) -> str:
        return f"{self.name}: " if self.name else ""

    def _unqueue(self, request: Pending, *, in_deque: bool = True, notify: bool = True) -> None:
        """Take ``request`` out of the queue's accounting, and out of its deque when ``in_deque``."""
        if request.timer is not None:
            request.timer.cancel()
            request.timer = None
        if not request.queued:
            return
        request.queued = False
        self._queued_rows -= request.rows
        if in_deque:
            # O(n), but only for the rare leavers (deadline, disconnect); batches pop from the left.
            (self._high if request.high else self._normal).remove(request)
        if notify:
            self._observer.on_queue(self._queued_rows)

    def _check_deadline(self, request: Pending) -> None:
        request.timer = None
        if not request.queued or request.deadline is None or self._loop is None:
            return
        remaining = request.deadline - self._clock()
        if remaining > _EARLY_S:  # fired early against our clock (e.g. a coarser loop clock): wait the rest
            request.timer = self._loop.call_later(remaining, self._check_deadline, request)
            return
        self._expire(request)
        self._check_idle()

    def _expire(self, request: Pending) -> None:
        self._unqueue(request)
        self._observer.on_shed("deadline")
        if not request.future.done():
            request.future.set_exception(
                DeadlineExceededError(f"{self._label}deadline passed while the request was queued")
            )

    def _pending(self) -> Iterable[Pending]:
        yield from self._high
        yield from self._normal

    def _take(self, now: float) -> list[Pending] | None:
        """The next batch if one should leave now, else None (the caller arms the delay timer)."""
        config = self.config
        while True:
            batch: list[Pending] = []
            rows = 0
            stale: Pending | None = None
            for request in self._pending():
                if request.deadline is not None and request.deadline <= now:
                    stale = request  # its timer has not run yet, and it must not execute
                    break
                if batch and rows + request.rows > config.max_batch_size:
                    break
                batch.append(request)
                rows += request.rows
                if rows >= config.max_batch_size:
                    break
            if stale is None:
                break
            self._expire(stale)
        if not batch:
            return None
        if self._draining or now + _EARLY_S >= self._oldest() + self._delay_s:
            return batch
        if self._queued_rows >= config.max_batch_size:
            return batch  # waiting cannot make it bigger
        reached = [size for size in self._preferred if size <= rows]
        if not reached:
            return None
        cut, total = 0, 0
        while total < reached[-1]:
            total += batch[cut].rows
            cut += 1
        del batch[cut:]
        return batch

    def _oldest(self) -> float:
        return min(queue[0].enqueued for queue in (self._high, self._normal) if queue)

    # ----- dispatch --------------------------------------------------------------------------------

    def _pump(self) -> None:
        """Launch every batch that should leave now, or arm the timer for the oldest request's delay."""
        self._pump_scheduled = False
        loop = self._loop
        if loop is None or self._closed:
            return
        while self._queued_rows and len(self._running) < self._instances:
            now = self._clock()
            batch = self._take(now)
            if batch is None:
                if self._queued_rows:
                    self._arm_delay_timer(self._oldest() + self._delay_s)
                break
            for request in batch:
                # The batch is a prefix of the high-then-normal order, so it pops from the left.
                popped = (self._high if request.high else self._normal).popleft()
                assert popped is request
                self._unqueue(request, in_deque=False, notify=False)
            self._observer.on_queue(self._queued_rows)
            self._launch(tuple(batch), now)
            if self.inline:
                # One batch per loop iteration, so a deep queue does not starve the loop's I/O.
                if self._queued_rows and not self._pump_scheduled:
                    self._pump_scheduled = True
                    loop.call_soon(self._pump)
                break
        if not self._queued_rows:
            self._cancel_delay_timer()
        self._check_idle()

    def _arm_delay_timer(self, when: float) -> None:
        if self._delay_timer is not None:
            if self._delay_when == when:
                return
            self._delay_timer.cancel()
        assert self._loop is not None
        self._delay_when = when
        self._delay_timer = self._loop.call_later(max(when - self._clock(), 0.0), self._on_delay_timer)

    def _on_delay_timer(self) -> None:
        self._delay_timer = None
        self._pump()

    def _cancel_delay_timer(self) -> None:
        if self._delay_timer is not None:
            self._delay_timer.cancel()
            self._delay_timer = None

    def _launch(self, batch: tuple[Pending, ...], now: float) -> None:
        queue_s = [now - request.enqueued for request in batch]
        self._guard.taken(min(queue_s), now)
        self._running.add(batch)
        if self._pool is None:
            try:
                outcome = run_batch(self._execute, batch, self._clock, self._label)
            except Exception as exc:
                self._finish(batch, queue_s, None, exc)
            else:
                self._finish(batch, queue_s, outcome, None)
            return
        assert self._loop is not None
        done = self._loop.run_in_executor(
            self._pool, run_batch, self._execute, batch, self._clock, self._label
        )
        done.add_done_callback(lambda f: self._on_done(batch, queue_s, f))

    def _on_done(
        self,
        batch: tuple[Pending, ...],
        queue_s: list[float],
        done: asyncio.Future[tuple[list[Tensors], float]],
    ) -> None:
        if done.cancelled():
            self._finish(batch, queue_s, None, NotReadyError(f"{self._label}shutting down"))
        elif (exc := done.exception()) is not None:
            self._finish(batch, queue_s, None, exc)
        else:
            self._finish(batch, queue_s, done.result(), None)
        self._pump()

    def _finish(
        self,
        batch: tuple[Pending, ...],
        queue_s: list[float],
        outcome: tuple[list[Tensors], float] | None,
        error: BaseException | None,
    ) -> None:
        self._running.discard(batch)
        if outcome is None:
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(batch_error(error, self._label))
            return
        parts, compute_s = outcome
        for request, part in zip(batch, parts, strict=True):
            if not request.future.done():  # a cancelled caller or stop() may have been first
                request.future.set_result(part)
        try:
            self._observer.on_batch(sum(r.rows for r in batch), len(batch), queue_s, compute_s)
        except Exception:  # a monitoring fault must not stall the queue
            log.exception("%sbatch observer failed", self._label)

    def _check_idle(self) -> None:
        idle = self._idle
        if idle is not None and not idle.done() and not self._queued_rows and not self._running:
            idle.set_result(None)
