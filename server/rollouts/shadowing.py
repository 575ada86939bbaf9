"""Shadows: a copy of a request run on another version beside the primary, and compared with it.

The primary never waits for its shadow: the copy runs in its own task, and the primary only hands over
its outputs (``Tap.primary_done``) when it has them. A shadow is dropped (and counted) past
``max_in_flight``, gives up after ``timeout_ms``, and its failure is only counted: it never touches the
primary's response. With ``compare``, each pair of outputs is scored (agree / disagree and the largest
|difference|) into metrics and into the shadow version's gate window.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from sluice.server.rollouts.gates import GateWindow
from sluice.server.rollouts.spec import Compare, Shadow

log = logging.getLogger("sluice.shadow")

Outputs = dict[str, np.ndarray]
#: Runs the shadow version on the request's inputs under a deadline (the service's executor call).
RunShadow = Callable[[dict[str, np.ndarray], int, float], Awaitable[Outputs]]
#: Takes each compared pair: (model, shadow version, primary outputs, shadow outputs, agree).
OnPair = Callable[[str, int, Outputs, Outputs, bool], None]


def compare(primary: Outputs, shadow: Outputs, spec: Compare) -> tuple[bool, float | None] | None:
    """Whether every row agrees, and the largest |difference| of numeric outputs; ``None`` if not compared.

    >>> a = {"p": np.array([[0.9, 0.1]])}
    >>> compare(a, {"p": np.array([[0.6, 0.4]])}, Compare(mode="argmax"))
    (True, 0.3)
    >>> compare(a, {"p": np.array([[0.6, 0.4]])}, Compare(mode="allclose", atol=0.01))[0]
    False
    """
    if spec.mode == "none":
        return None
    names = [spec.output] if spec.output else [n for n in primary if n in shadow]
    agree, largest = True, None
    for name in names:
        if name not in primary or name not in shadow:
            return False, None
        a, b = np.asarray(primary[name]), np.asarray(shadow[name])
        if a.shape != b.shape:
            return False, None
        if a.dtype.kind not in "biuf" or b.dtype.kind not in "biuf":
            agree = agree and bool(np.array_equal(a, b))
            continue
        diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
        largest = diff if largest is None else max(largest, diff)
        if spec.mode == "argmax" and a.ndim >= 2:
            agree = agree and bool(np.array_equal(np.argmax(a, axis=-1), np.argmax(b, axis=-1)))
        elif spec.mode == "argmax":
            agree = agree and bool(np.array_equal(a, b))
        else:
            agree = agree and diff <= spec.atol
    return agree, (round(largest, 12) if largest is not None else None)


class Tap:
    """The primary's side of one mirrored request: it hands over its outcome and never awaits the copy."""

    def __init__(self) -> None:
        self._primary: asyncio.Future[Outputs | None] = asyncio.get_running_loop().create_future()

    def primary_done(self, outputs: Outputs | None) -> None:
        if not self._primary.done():
            self._primary.set_result(outputs)

    async def primary(self) -> Outputs | None:
        return await self._primary


class Mirror:
    """One standing (or rollout) shadow of one model: its cap, its tasks and its counters."""

    def __init__(
        self,
        model: str,
        spec: Shadow,
        *,
        metrics: Any,
        window: GateWindow,
        clock: Callable[[], float] = time.monotonic,
        random_source: Callable[[], float] = random.random,
        on_pair: OnPair | None = None,
    ) -> None:
        self.model = model
        self.spec = spec
        self.version = spec.version
        self._metrics = metrics
        self._window = window
        self._clock = clock
        self._random = random_source
        self._on_pair = on_pair
        self.in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def offer(self, inputs: dict[str, np.ndarray], rows: int, execute: RunShadow) -> Tap | None:
        """Start a copy of this request if it is sampled and there is room; never blocks."""
        if self.spec.percent <= 0 or self._random() * 100 >= self.spec.percent:
            return None
        if self.in_flight >= self.spec.max_in_flight:
            self._count("dropped")
            return None
        tap = Tap()
        self.in_flight += 1
        task = asyncio.create_task(self._run(tap, inputs, rows, execute), name=f"sluice-shadow-{self.model}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return tap

    async def _run(self, tap: Tap, inputs: dict[str, np.ndarray], rows: int, execute: RunShadow) -> None:
        started = self._clock()
        timeout_s = self.spec.timeout_ms / 1e3
        try:
            try:
                outputs = await asyncio.wait_for(execute(inputs, rows, started + timeout_s), timeout_s)
            except TimeoutError:
                self._count("timeout")
                self._window.record(self._clock(), error=True, latency_s=None)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure of the copy is the shadow's, never the primary's
                self._count("error")
                log.debug("shadow %s/%d failed: %s", self.model, self.version, exc)
                self._window.record(self._clock(), error=True, latency_s=None)
                return
            finished = self._clock()
            self._count("ok")
            self._window.record(finished, error=False, latency_s=finished - started)
            left = max(started + timeout_s - finished, 0.0) + 1.0
            try:
                primary = await asyncio.wait_for(tap.primary(), left)
            except TimeoutError:
                return
            if primary is not None:
                self._compare(primary, outputs)
        finally:
            self.in_flight -= 1

    def _compare(self, primary: Outputs, shadow: Outputs) -> None:
        scored = compare(primary, shadow, self.spec.compare)
        if scored is None:
            return
        agree, difference = scored
        labels = (self.model, str(self.version))
        self._metrics.child(self._metrics.shadow_agreement, *labels, "agree" if agree else "disagree").inc()
        if difference is not None:
            self._metrics.child(self._metrics.shadow_difference, *labels).observe(difference)
        self._window.compared(self._clock(), agree=agree)
        if self._on_pair is not None:  # the monitor's paired streams (sluice.monitoring.shadow)
            self._on_pair(self.model, self.version, primary, shadow, agree)

    def _count(self, outcome: str) -> None:
        self._metrics.child(self._metrics.shadow_requests, self.model, str(self.version), outcome).inc()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
