"""Load-time profiling that decides how a model version executes: inline or on threads, and batch sizes.

``decide_execution`` times the model's synchronous ``run`` at a few batch sizes and the cost of one
thread hop on this machine, and returns an ``ExecutionPlan`` that the batcher is built from and that the
model config endpoint shows. Absolute timings do not travel between runs on a shared machine; the plan
only compares two things measured moments apart in the same process.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy.typing as npt

Tensors = dict[str, npt.NDArray[Any]]

# A batch size is worth waiting past only if the next one lowers the per-row cost by more than this.
_MIN_GAIN = 0.10
# Inline when a call at the target batch size costs less than this many thread hops.
_HOP_FACTOR = 2.0


@dataclass(frozen=True)
class ExecutionPlan:
    """How a model version executes, and the measurements the choice rests on (microseconds)."""

    inline: bool
    preferred_batch_sizes: list[int]
    per_row_us: dict[int, float]
    hop_us: float

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready description for the model config endpoint (JSON keys are strings)."""
        return {
            "execution": "inline" if self.inline else "thread",
            "inline": self.inline,
            "preferred_batch_sizes": list(self.preferred_batch_sizes),
            "per_row_us": {str(size): round(us, 3) for size, us in self.per_row_us.items()},
            "hop_us": round(self.hop_us, 3),
        }


def decide_execution(
    run: Callable[[Tensors], Any],
    make_inputs: Callable[[int], Tensors],
    *,
    sizes: Sequence[int] = (1, 8, 32, 128),
    budget_s: float = 0.15,
    repeats: int = 5,
) -> ExecutionPlan:
    """Profile ``run`` at ``sizes`` rows and choose inline or threaded execution and the preferred sizes.

    Measurement: per size, one warm-up call on ``make_inputs(size)`` and then up to ``repeats`` timed
    calls, stopping early once that size's share of ``budget_s`` is spent (always at least one); the
    per-row cost is the median call time over the size. The hop is the median time to submit a no-op to
    a one-thread pool and await it from an asyncio loop (run on a helper thread, so this works whether
    or not the caller is inside a running loop; it measures asyncio's default loop, not uvloop).

    Rules:

    - ``preferred_batch_sizes`` is ``[k]``, where ``k`` is the first size whose next size improves the
      per-row cost by no more than 10 % (waiting for more rows past ``k`` buys little, and for models
      whose per-row cost rises with the batch, it costs); if every step improves by more, the largest
      size. Sizes above the version's ``max_batch_size`` must be left out of ``sizes`` by the caller.
    - ``inline`` when one call at ``k`` rows costs less than two thread hops: the hop is then a large
      part of the work, and it is paid on the event loop, while a threaded call could at best overlap a
      call that short. A model expensive at ``k`` rows runs on threads so the loop keeps serving I/O.

    >>> plan = decide_execution(lambda inputs: inputs, lambda rows: {}, sizes=(1, 8))
    >>> plan.inline
    True
    """
    ordered = sorted(set(sizes))
    if not ordered or ordered[0] < 1:
        raise ValueError(f"sizes: expected positive batch sizes, got {list(sizes)!r}")
    hop_us = measure_hop_us()
    share_s = budget_s / len(ordered)
    per_row_us: dict[int, float] = {}
    for size in ordered:
        inputs = make_inputs(size)
        run(inputs)  # first call at a new shape allocates; it is not what steady state costs
        samples: list[float] = []
        started = time.perf_counter()
        while len(samples) < max(repeats, 1):
            t0 = time.perf_counter()
            run(inputs)
            samples.append(time.perf_counter() - t0)
            if time.perf_counter() - started > share_s:
                break
        per_row_us[size] = statistics.median(samples) * 1e6 / size

    knee = ordered[-1]
    for size, bigger in itertools.pairwise(ordered):
        if per_row_us[bigger] > (1.0 - _MIN_GAIN) * per_row_us[size]:
            knee = size
            break
    inline = per_row_us[knee] * knee < _HOP_FACTOR * hop_us
    return ExecutionPlan(inline=inline, preferred_batch_sizes=[knee], per_row_us=per_row_us, hop_us=hop_us)


def measure_hop_us(repeats: int = 32) -> float:
    """Median microseconds for an asyncio loop to run a no-op on a worker thread and get its result."""
    samples: list[float] = []
    failure: list[BaseException] = []

    async def hops() -> None:
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(1, thread_name_prefix="sluice-hop-probe") as pool:
            await loop.run_in_executor(pool, _noop)  # starts the thread; not part of a hop
            for _ in range(repeats):
                t0 = time.perf_counter()
                await loop.run_in_executor(pool, _noop)
                samples.append(time.perf_counter() - t0)

    def probe() -> None:
        try:
            asyncio.run(hops())
        except BaseException as exc:  # re-raised in the caller's thread below
            failure.append(exc)

    thread = threading.Thread(target=probe, name="sluice-hop-probe")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return statistics.median(samples) * 1e6


def _noop() -> None:
    return None
