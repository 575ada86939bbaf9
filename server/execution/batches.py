"""One batch: the requests in it, how their inputs are joined and the outputs split, what a failure becomes.

Pure helpers of ``sluice.server.execution.batching``: nothing here schedules anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from sluice.converters.artifact.errors import InternalError, InvalidInputError, NotReadyError

Tensors = dict[str, npt.NDArray[Any]]
#: The model itself: a whole batch of inputs in, its outputs out (``OnnxRuntime.run``).
RunModel = Callable[[Tensors], Tensors]


class BatchObserver(Protocol):
    """What the monitoring layer learns from a batcher; every method is called on the event loop."""

    def on_batch(self, rows: int, requests: int, queue_s: list[float], compute_s: float) -> None: ...

    def on_shed(self, reason: str) -> None: ...  # queue_full, deadline, disconnected, shutdown

    def on_queue(self, rows: int) -> None: ...  # queued rows after each change; called per request


class NullObserver:
    """The default observer: ignores everything."""

    def on_batch(self, rows: int, requests: int, queue_s: list[float], compute_s: float) -> None:
        return None

    def on_shed(self, reason: str) -> None:
        return None

    def on_queue(self, rows: int) -> None:
        return None


class Pending:
    """One request waiting in (or taken from) a batcher's queue."""

    __slots__ = ("deadline", "enqueued", "future", "high", "inputs", "queued", "rows", "timer")

    def __init__(
        self,
        inputs: Tensors,
        rows: int,
        future: asyncio.Future[Tensors],
        deadline: float | None,
        enqueued: float,
        high: bool,
    ) -> None:
        self.inputs = inputs
        self.rows = rows
        self.future = future
        self.deadline = deadline
        self.enqueued = enqueued
        self.high = high
        self.queued = True
        self.timer: asyncio.TimerHandle | None = None


class DelayGuard:
    """Admission by time, CoDel's way: shed new requests while the queue holds a standing delay.

    Fed the shortest wait in each batch taken (``taken``). A wait over ``target_s`` that persists for a
    whole ``interval_s`` (every batch taken in that time waited too long) means the queue is not draining;
    from then on ``shedding`` is true until a batch is taken with a wait under the target, or the queue
    empties. A burst that drains within the interval (a busy event loop catching up) sheds nothing.

    >>> guard = DelayGuard(target_s=0.02)
    >>> guard.taken(0.03, now=1.00); guard.shedding
    False
    >>> guard.taken(0.04, now=1.05); guard.taken(0.05, now=1.11); guard.shedding
    True
    >>> guard.taken(0.001, now=1.12); guard.shedding
    False
    """

    def __init__(self, target_s: float | None, interval_s: float = 0.1) -> None:
        self.target_s = target_s
        self.interval_s = interval_s
        self.shedding = False
        self._above_since: float | None = None

    def taken(self, wait_s: float, now: float) -> None:
        if self.target_s is None:
            return
        if wait_s <= self.target_s:
            self.reset()
        elif self._above_since is None:
            self._above_since = now
        elif now - self._above_since >= self.interval_s:
            self.shedding = True

    def reset(self) -> None:
        self._above_since = None
        self.shedding = False


def check_rows(inputs: Tensors, rows: int) -> None:
    """Every input holds exactly ``rows`` rows (``InvalidInputError`` naming the first that does not)."""
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise InvalidInputError(f"rows must be a positive integer, got {rows!r}")
    for input_name, array in inputs.items():
        if array.ndim == 0 or array.shape[0] != rows:
            raise InvalidInputError(
                f"input '{input_name}' has {array.shape[0] if array.ndim else 0} rows, expected {rows}",
                details={"input": input_name},
            )


def run_batch(
    execute: RunModel, batch: tuple[Pending, ...], clock: Callable[[], float], label: str
) -> tuple[list[Tensors], float]:
    """Concatenate, execute and split one batch; runs on a worker thread unless inline."""
    if len(batch) == 1:
        inputs = batch[0].inputs
    else:
        inputs = {
            name: np.concatenate([request.inputs[name] for request in batch]) for name in batch[0].inputs
        }
    rows = sum(request.rows for request in batch)
    start = clock()
    outputs = execute(inputs)
    compute_s = clock() - start
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != rows:
            got = array.shape[0] if array.ndim else "no"
            raise InternalError(
                f"{label}output '{name}' has {got} rows for a batch of {rows}",
                details={"output": name},
            )
    if len(batch) == 1:
        return [outputs], compute_s
    parts: list[Tensors] = []
    offset = 0
    for request in batch:
        end = offset + request.rows
        parts.append({name: array[offset:end] for name, array in outputs.items()})  # views
        offset = end
    return parts, compute_s


def batch_error(error: BaseException | None, label: str) -> BaseException:
    if isinstance(error, NotReadyError):
        return NotReadyError(error.message)
    if isinstance(error, InternalError):  # the runtime's own translation: keep its message
        fresh = InternalError(error.message, details=error.details)
    else:
        fresh = InternalError(
            f"{label}batch execution failed ({type(error).__name__})",
            details={"reason": "model_execution"},
        )
    # One exception object per caller: a shared one would collect every caller's traceback.
    fresh.__cause__ = error
    return fresh
