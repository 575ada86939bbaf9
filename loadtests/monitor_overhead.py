"""Hot-path cost of monitoring (S10): what ``Monitor.observe`` adds to one request, in microseconds.

    python -m loadtests.monitor_overhead

Measures ``observe`` alone (a registered version, a 4-feature row and a classifier's outputs) with the
background task both idle (the queue's getter is waiting: each put wakes it) and busy (no getter), over
7 runs of 100,000 calls; reports the median run. The budget is 10 us per request (monitoring.md, P5).
"""

from __future__ import annotations

import asyncio
import statistics
import time

import numpy as np

from sluice.monitoring.layout import Layout, WatchOptions
from sluice.monitoring.metrics import Metrics
from sluice.monitoring.monitor import Monitor

CALLS = 100_000


async def measure() -> dict[str, float]:
    monitor = Monitor(Metrics(), queue_size=CALLS + 1)
    layout = Layout.from_signature(
        [("input", "FP32", (-1, 4), ("f0", "f1", "f2", "f3"))],
        [("label", "label"), ("probabilities", "probabilities")],
        [0, 1],
    )
    await monitor.watch("clf", 1, layout, None, WatchOptions())
    await monitor.start()
    await monitor.stop()  # nothing drains: the queue only fills, as under a busy background task
    inputs = {"input": np.zeros((1, 4), np.float32)}
    outputs = {"label": np.zeros(1, np.int64), "probabilities": np.zeros((1, 2), np.float32)}
    results: dict[str, float] = {}
    runs = []
    for _ in range(7):
        await monitor.start()
        await monitor.stop()  # a fresh empty queue each run
        started = time.perf_counter()
        for _ in range(CALLS):
            monitor.observe("clf", 1, inputs, outputs, 0.001, False)
        runs.append((time.perf_counter() - started) / CALLS * 1e6)
    results["observe_busy_us"] = statistics.median(runs)
    # Idle consumer: each put wakes a waiting getter (one call at a time, as requests arrive).
    queue: asyncio.Queue[object] = asyncio.Queue(10)
    runs = []
    for _ in range(7):
        total = 0.0
        for _ in range(2000):
            getter = asyncio.ensure_future(queue.get())
            await asyncio.sleep(0)
            t = time.perf_counter()
            queue.put_nowait(1)
            total += time.perf_counter() - t
            await getter
        runs.append(total / 2000 * 1e6)
    results["put_waking_getter_us"] = statistics.median(runs)
    return results


def main() -> None:
    for name, value in asyncio.run(measure()).items():
        print(f"{name}: {value:.2f}")


if __name__ == "__main__":
    main()
