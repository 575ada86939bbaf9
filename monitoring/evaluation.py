"""Detector-level evaluation over the scenarios of monitoring.md (S0-S8), seeded and runnable by anyone.

    python -m sluice.monitoring.evaluation          # fast mode (the test suite runs it), a few seconds
    python -m sluice.monitoring.evaluation --full   # docs/monitoring.md's table, a few minutes on one core

Every scenario drives ``VersionMonitor`` (the code the gateway runs) with the traffic of
``sluice.monitoring.synthetic``: a model with four N(0,1) features ``x0..x3``, one categorical ``c``
(shares a .3, b .3, c .25, d .15), a probability score, lognormal latency (median 5 ms) and a base error
rate. References are profiles built from a separate 5,000-row sample, as a converter would. A run is
stable for ``PRE`` samples, then changes (``sluice.monitoring.scenarios``); its delay is counted in
samples of the changed stream after the change (rows for features and predictions, requests for latency
and errors). S0 runs stable traffic; S8 feeds River's SEA and Agrawal streams, whose concept drifts change
labels only: an unsupervised monitor must stay quiet. ``DummyDriftDetector`` (fixed period) is the
baseline: what "detection" looks like with no information at all. Here: the runs and the report.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from river import drift
from river.datasets import synth

from sluice.converters.artifact.profile import Profile
from sluice.monitoring.layout import Layout, Observation, WatchOptions
from sluice.monitoring.scenarios import PRE, SCENARIOS, Scenario
from sluice.monitoring.synthetic import (
    LAYOUT,
    ROWS_PER_REQUEST,
    features_profile,
    numeric_profile,
    observations,
    run,
    traffic,
)
from sluice.monitoring.version import VersionMonitor


@dataclass
class Result:
    """One scenario over its seeds: detections, delays, and alarms before the change."""

    scenario: Scenario
    runs: int
    detected: int
    right_subject: int
    delays: list[int]
    early: int  # alarms before the change (false alarms inside runs)

    def row(self) -> list[str]:
        d = sorted(self.delays)
        med = f"{np.median(d):.0f}" if d else "-"
        p90 = f"{np.quantile(d, 0.9):.0f}" if d else "-"
        s = self.scenario
        rate = self.detected / self.runs
        ok = rate >= 0.95 and bool(d) and float(np.median(d)) <= s.median_target
        right = f"{self.right_subject}/{self.detected}" if s.kind == "drift" else ""
        return [
            s.id,
            s.name,
            f"{self.detected}/{self.runs}",
            med,
            p90,
            right,
            s.target,
            "yes" if ok else "**no**",
        ]


def run_scenario(s: Scenario, seeds: int) -> Result:
    detected = right = early = 0
    delays: list[int] = []
    options = WatchOptions(reference_size=2000)
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        profile = features_profile(0)
        if s.unit == "rows":
            rows = PRE + s.post
            reqs = math.ceil(rows / ROWS_PER_REQUEST)
            t = traffic(rng, rows, reqs, s.error_rate)
            s.change(rng, t, PRE)
            per = ROWS_PER_REQUEST
        else:
            ref = options.reference_size
            reqs = ref + PRE + s.post
            t = traffic(rng, 0, reqs, s.error_rate)
            s.change(rng, t, ref + PRE)
            per = 0
        alarms = run(profile, t, per, options)
        kinds = {"drift"} if s.kind == "drift" else {s.kind}
        # Health streams learn their live baseline from the first request on: they count every request.
        t0 = PRE if s.unit == "rows" else options.reference_size + PRE
        relevant = [
            a for a in alarms if a.stream.kind in kinds and (not s.signals or a.stream.signal in s.signals)
        ]
        early += sum(1 for a in relevant if a.sample < t0)
        after = [a for a in relevant if a.sample >= t0]
        if after:
            first = min(after, key=lambda a: a.sample)
            delay = first.sample - t0
            if delay < s.bound:
                detected += 1
                delays.append(delay)
                right += first.stream.subject == s.subject
    return Result(s, seeds, detected, right, delays, early)


def run_stable(rows: int, seed: int = 0) -> tuple[dict[str, list[int]], int, int, int]:
    """S0: alarms per detector family on stable traffic; (alarms by family, samples by family, rows, all)."""
    rng = np.random.default_rng(1000 + seed)
    options = WatchOptions(reference_size=2000)
    vm = VersionMonitor("eval", 1, LAYOUT, features_profile(0), options)
    step = 50_000
    total = 0
    for start in range(0, rows, step):
        n = min(step, rows - start)
        t = traffic(rng, n, n, 0.001)
        obs = observations(t, 1)
        for i in range(0, len(obs), 256):
            total += len(vm.feed(obs[i : i + 256]))
    families: dict[str, list[int]] = {}
    for st in vm.streams():
        name = f"{type(st.detector).__name__} on {st.signal}"
        fam = families.setdefault(name, [0, 0, 0])
        fam[0] += st.alarms
        fam[1] += st.samples
        fam[2] += 1
    return families, rows, total, len(vm.streams())


def run_concept(seeds: int, n: int) -> list[tuple[str, int, int]]:
    """S8: SEA and Agrawal concept drift (labels only) under an unsupervised monitor: alarms raised."""
    out = []
    for name, make in (
        (
            "SEA 0 -> 3",
            lambda s: synth.ConceptDriftStream(
                synth.SEA(0, seed=s), synth.SEA(3, seed=s + 1), seed=s, position=n // 2, width=500
            ),
        ),
        (
            "Agrawal 0 -> 4",
            lambda s: synth.ConceptDriftStream(
                synth.Agrawal(0, seed=s), synth.Agrawal(4, seed=s + 1), seed=s, position=n // 2, width=500
            ),
        ),
    ):
        alarms = 0
        for seed in range(seeds):
            ref = [x for x, _ in make(100 + seed).take(5000)]  # type: ignore[no-untyped-call]
            keys = list(ref[0])
            matrix = np.asarray([[x[k] for k in keys] for x in ref], dtype=np.float64)
            profile = Profile({k: numeric_profile(matrix[:, j]) for j, k in enumerate(keys)})
            layout = Layout.from_signature([("x", "FP64", (-1, len(keys)), keys)], [])
            vm = VersionMonitor("eval", 1, layout, profile, WatchOptions())
            data = np.asarray(
                [[x[k] for k in keys] for x, _ in make(seed).take(n)],  # type: ignore[no-untyped-call]
                dtype=np.float64,
            )
            obs = [
                Observation({"x": data[i : i + 50]}, None, 0.005, False, float(i)) for i in range(0, n, 50)
            ]
            alarms += sum(1 for a in vm.feed(obs) if a.stream.kind == "drift")
        out.append((name, alarms, seeds * n))
    return out


def run_dummy(seeds: int) -> tuple[int, int, list[int], float]:
    """DummyDriftDetector (fixed, t_0=1,000) on the S1 stream: detection and delays; false alarms on S0."""
    detected, delays = 0, []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=PRE + 2000)
        x[PRE:] += 1.0
        d = drift.DummyDriftDetector(trigger_method="fixed", t_0=1000, w=1000, seed=seed)
        for i, v in enumerate(x.tolist()):
            d.update(v)  # type: ignore[no-untyped-call]
            if d.drift_detected and i >= PRE:
                detected += 1
                delays.append(i - PRE)
                break
    stable = drift.DummyDriftDetector(trigger_method="fixed", t_0=1000, seed=0)
    false_alarms = 0
    for v in np.random.default_rng(0).normal(size=100_000).tolist():
        stable.update(v)  # type: ignore[no-untyped-call]
        false_alarms += stable.drift_detected
    return detected, seeds, delays, float(false_alarms)


def report(full: bool, out: Any = sys.stdout) -> dict[str, Any]:
    seeds = 30 if full else 3
    stable_rows = 1_000_000 if full else 40_000
    started = time.perf_counter()
    results = [run_scenario(s, seeds) for s in SCENARIOS]
    families, rows, total, n_detectors = run_stable(stable_rows)
    concept = run_concept(5 if full else 1, 10_000 if full else 4000)
    dummy = run_dummy(seeds)
    w = out.write
    w(f"Mode: {'full' if full else 'fast'}; {seeds} seeds per scenario; S0 over {rows:,} rows.\n\n")
    w("| id | scenario | detected | median delay | p90 delay | right feature | target | met |\n")
    w("| --- | --- | ---: | ---: | ---: | ---: | --- | --- |\n")
    for r in results:
        w("| " + " | ".join(r.row()) + " |\n")
    dd, dn, ddel, dfa = dummy
    w(
        f"| base | DummyDriftDetector (fixed, t_0=1,000) on S1 +1 sigma | {dd}/{dn} | "
        f"{np.median(ddel):.0f} | {np.quantile(ddel, 0.9):.0f} | | {dfa:.0f} false alarms / 100k | - |\n"
    )
    for name, alarms, n in concept:
        met = "yes" if alarms == 0 else "**no**"
        w(f"| S8 | {name} (labels only) | {alarms} alarms in {n:,} rows | | | | zero alarms | {met} |\n")
    w(
        "\nS0, stable traffic: false alarms per 100k samples "
        "(target <= 1 per detector, <= 10 monitor-wide)\n\n"
    )
    w("| detector family | detectors | alarms | per 100k per detector |\n| --- | ---: | ---: | ---: |\n")
    per_100k: dict[str, float] = {}
    for name, (alarms, samples, count) in sorted(families.items()):
        rate = alarms / max(samples, 1) * 1e5
        per_100k[name] = rate
        w(f"| {name} | {count} | {alarms} | {rate:.2f} |\n")
    monitor = total / rows * 1e5
    w(f"| whole monitor ({n_detectors} detectors) | | {total} | {monitor:.2f} per 100k rows |\n")
    w(f"\n({time.perf_counter() - started:.0f} s)\n")
    return {"results": results, "stable_per_100k": per_100k, "monitor_per_100k": monitor, "concept": concept}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="30 seeds and 1M stable rows (the docs' table)")
    args = parser.parse_args(argv)
    report(args.full)


if __name__ == "__main__":
    main()
