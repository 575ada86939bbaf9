"""Latency traces measured on the machine it runs on: the noise the latency detectors must live with.

A synthetic lognormal is kinder than a shared machine: scheduler preemption, other tenants' bursts and
frequency changes make real latency heavy-tailed and autocorrelated. ``trace`` times a small model-like
computation (a 256-wide two-layer network on 16 rows, tens of microseconds) request after request;
``factor`` runs it several times per request (a heavier version). ``report`` feeds the traces to the
latency detectors: false alarms per 100k requests on the stable trace, and the delay of a version 3x
heavier and of a doubled p50 (what CPU contention does to a loaded server; a busy process sharing the
core of this closed loop made it *faster* here, by keeping the core out of idle states).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import numpy as np
from river import drift

from sluice.monitoring.calibration import per_detector_arl
from sluice.monitoring.health import HealthDetectors
from sluice.monitoring.live import LatencyShift

_RNG = np.random.default_rng(0)
_W1 = _RNG.normal(size=(128, 256))
_W2 = _RNG.normal(size=(256, 8))


def _work(x: np.ndarray) -> float:
    h = np.maximum(x @ _W1, 0.0)
    return float((h @ _W2).max())


def trace(requests: int, factor: int = 1, interval_s: float = 0.0, seed: int = 0) -> np.ndarray:
    """Seconds each of ``requests`` requests took, each ``factor`` runs of the work on 16 rows, one
    starting every ``interval_s`` (as traffic would: the machine's noise has its own time scales)."""
    x = np.random.default_rng(seed).normal(size=(16, 128))
    out = np.empty(requests)
    clock = time.perf_counter
    due = clock()
    for i in range(requests):
        if interval_s:
            due += interval_s
            wait = due - clock()
            if wait > 0:
                time.sleep(wait)
        started = clock()
        for _ in range(factor):
            _work(x)
        out[i] = clock() - started
    return out


def _first(alarms: np.ndarray) -> int | None:
    return int(alarms[0]) if alarms.size else None


def report(requests: int = 150_000, interval_s: float = 0.0005, out: TextIO = sys.stdout) -> dict[str, Any]:
    """Measure the traces, feed the latency detectors, and write the table (see the module docstring)."""
    started = time.perf_counter()
    stable = trace(requests, interval_s=interval_s)
    heavy = trace(5000, factor=3, interval_s=interval_s, seed=1)
    logs = np.log(stable)
    w = out.write
    p50, p99 = float(np.median(stable)), float(np.quantile(stable, 0.99))
    w(f"Stable trace: {requests:,} requests, one every {interval_s * 1e3:.1f} ms; p50 {p50 * 1e6:.0f} us, ")
    w(f"p99 {p99 * 1e6:.0f} us, p99.9 {float(np.quantile(stable, 0.999)) * 1e6:.0f} us; ")
    w(f"the heavier version's p50 is {float(np.median(heavy)) / p50:.2f}x.\n\n")
    ref = logs[:2000]
    z = (logs - ref.mean()) / max(float(ref.std()), 1e-9)
    rivals: dict[str, Callable[[], Any]] = {
        "River PageHinkley (up, defaults) on z of log latency": lambda: drift.PageHinkley(mode="up"),
        "River ADWIN (defaults) on z of log latency": drift.ADWIN,
    }
    # As the gateway builds them: a monitor of 20 detectors under the default budget of 10 per 100k.
    health = HealthDetectors.build(per_detector_arl(10.0, 20), 2000)
    rows = {
        "LatencyShift on log latency": len(health.latency.detector.update_many(logs)),  # type: ignore[attr-defined]
        "TailShift on latency": len(health.tail.detector.update_many(stable)),  # type: ignore[attr-defined]
    }
    for name, make in rivals.items():
        detector = make()
        rows[name] = sum(1 for v in z[2000:].tolist() if (detector.update(v), detector.drift_detected)[1])
    w("| detector | false alarms | per 100k requests |\n| --- | ---: | ---: |\n")
    for name, alarms in rows.items():
        w(f"| {name} | {alarms} | {alarms / requests * 1e5:.2f} |\n")
    starts = [requests * j // 5 for j in range(1, 5)]
    changes = {"version 3x heavier (measured)": np.log(heavy), "p50 doubled (trace x 2)": None}
    w("\n| regression | delays (requests, 4 change points) |\n| --- | --- |\n")
    delays: dict[str, list[int | None]] = {}
    for name, after in changes.items():
        found = []
        for start in starts:
            post = after if after is not None else logs[start : start + 5000] + math.log(2.0)
            detector = LatencyShift()
            detector.update_many(logs[:start])
            found.append(_first(detector.update_many(post)))
        delays[name] = found
        w(f"| {name} | {', '.join('-' if d is None else str(d) for d in found)} |\n")
    w(f"\n({time.perf_counter() - started:.0f} s)\n")
    return {"false_alarms": rows, "delays": delays, "requests": requests}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=150_000, help="requests in the stable trace")
    parser.add_argument("--interval-ms", type=float, default=0.5, help="one request every this many ms")
    args = parser.parse_args(argv)
    report(args.requests, args.interval_ms / 1e3)


if __name__ == "__main__":
    main()
