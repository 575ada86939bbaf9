"""Shadows: a copy of a request run on another version beside the primary, and compared with it.

The primary never waits for its shadow: the copy runs in its own task, and the primary only hands over
its outputs (``Tap.primary_done``) when it has them. A shadow is dropped (and counted) past
``max_in_flight``, gives up after ``timeout_ms``, and its failure is only counted: it never touches the
primary's response. With ``compare``, each pair of outputs is judged row by row
(``sluice.server.rollouts.comparison``: by the model's kind unless told otherwise) into metrics (agree /
disagree per request, the largest |difference|, the per-row score difference as a histogram) and into the
shadow version's gate window.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from sluice.server.rollouts.comparison import Judge, compare, judge_for
from sluice.server.rollouts.gates import GateWindow
from sluice.server.rollouts.spec import Shadow

log = logging.getLogger("sluice.shadow")

Outputs = dict[str, np.ndarray]
#: Runs the shadow version on the request's inputs under a deadline (the service's executor call).
RunShadow = Callable[[dict[str, np.ndarray], int, float], Awaitable[Outputs]]
#: Takes each compared pair: (model, shadow version, primary outputs, shadow outputs, agree).
OnPair = Callable[[str, int, Outputs, Outputs, bool], None]


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
        judge: Callable[[Shadow], Judge] = lambda spec: judge_for(spec.compare, None),
    ) -> None:
        self.model = model
        self.spec = spec
        self._judge_of = judge  # resolved on the first pair: the version's manifest is loaded by then
        self._judge: tuple[Shadow, Judge] | None = None
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

    def judge(self) -> Judge:
        if self._judge is None or self._judge[0] is not self.spec:
            self._judge = (self.spec, self._judge_of(self.spec))
        return self._judge[1]

    def _compare(self, primary: Outputs, shadow: Outputs) -> None:
        scored = compare(primary, shadow, self.judge())
        if scored is None:
            return
        labels = (self.model, str(self.version))
        agree = scored.agree
        self._metrics.child(self._metrics.shadow_agreement, *labels, "agree" if agree else "disagree").inc()
        if scored.largest is not None:
            self._metrics.child(self._metrics.shadow_difference, *labels).observe(scored.largest)
        if scored.differences.size:
            histogram = self._metrics.child(self._metrics.shadow_score, *labels)
            for difference in scored.differences[:256].tolist():  # bounded per request
                histogram.observe(difference)
        self._window.compared(self._clock(), rows=scored.rows, disagreements=scored.disagreements)
        if self._on_pair is not None:  # the monitor's paired streams (sluice.monitoring.shadow)
            self._on_pair(self.model, self.version, primary, shadow, agree)

    def _count(self, outcome: str) -> None:
        self._metrics.child(self._metrics.shadow_requests, self.model, str(self.version), outcome).inc()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
