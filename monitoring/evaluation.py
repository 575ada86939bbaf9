"""Detector-level evaluation over the scenarios of monitoring.md (S0-S8), seeded and runnable by anyone.

    python -m sluice.monitoring.evaluation          # fast mode (the test suite runs it), a few seconds
    python -m sluice.monitoring.evaluation --full   # the table in docs/monitoring.md, a few minutes on one core

Every scenario drives ``VersionMonitor`` (the code the gateway runs) with synthetic traffic: a model with
four N(0,1) features ``x0..x3``, one categorical ``c`` (shares a .3, b .3, c .25, d .15), a probability
score, lognormal latency (median 5 ms) and a base error rate. References are profiles built from a
separate 5,000-row sample, as a converter would. A run is stable for ``PRE`` samples, then changes; its
delay is counted in samples of the changed stream after the change (rows for features and predictions,
requests for latency and errors). S8 feeds River's SEA and Agrawal streams, whose concept drifts change
labels only: an unsupervised monitor must stay quiet. ``DummyDriftDetector`` (fixed period) is the
baseline: what "detection" looks like with no information at all.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from river import drift
from river.datasets import synth

from sluice.monitoring.layout import Layout, Observation, WatchOptions
from sluice.monitoring.streams import Alarm
from sluice.monitoring.version import VersionMonitor

FEATURES = ("x0", "x1", "x2", "x3")
SHARES = {"a": 0.3, "b": 0.3, "c": 0.25, "d": 0.15}
PRE = 1000
LAT_MEDIAN_S = 0.005
LAT_SIGMA = 0.25
ROWS_PER_REQUEST = 20


def _numeric_profile(v: np.ndarray) -> dict[str, Any]:
    counts, edges = np.histogram(v, bins=10)
    qs = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
    return {
        "type": "numeric",
        "mean": float(v.mean()),
        "std": float(v.std()),
        "quantiles": {str(q): float(x) for q, x in zip(qs, np.quantile(v, qs), strict=True)},
        "histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
    }


def _categories(rng: np.random.Generator, n: int, shares: dict[str, float]) -> np.ndarray:
    keys = list(shares)
    p = np.asarray([shares[k] for k in keys])
    return np.asarray(keys, dtype=object)[rng.choice(len(keys), n, p=p / p.sum())]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-z)))


def _features_profile(seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(10_000 + seed)
    x = rng.normal(size=(5000, 4))
    c = _categories(rng, 5000, SHARES)
    score = _sigmoid(1.5 * rng.normal(size=5000))
    names, counts = np.unique(c.astype(str), return_counts=True)
    features: dict[str, Any] = {f: _numeric_profile(x[:, j]) for j, f in enumerate(FEATURES)}
    features["c"] = {
        "type": "categorical",
        "categories": {str(k): float(v) / 5000 for k, v in zip(names, counts, strict=True)},
        "other": 0.0,
    }
    qs = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
    return {
        "features": features,
        "outputs": {
            "class_shares": {"0": float(np.mean(score <= 0.5)), "1": float(np.mean(score > 0.5))},
            "score": "positive_class_probability",
            "score_quantiles": {str(q): float(v) for q, v in zip(qs, np.quantile(score, qs), strict=True)},
        },
    }


LAYOUT = Layout.from_signature(
    [("num", "FP32", (-1, 4), FEATURES), ("cat", "BYTES", (-1,), ("c",))],
    [("label", "label"), ("probabilities", "probabilities")],
    [0, 1],
)


@dataclass
class Traffic:
    """Arrays for one run: rows (features, score) and requests (latency, errors)."""

    x: np.ndarray
    c: np.ndarray
    score: np.ndarray
    latency: np.ndarray
    errors: np.ndarray


def _traffic(rng: np.random.Generator, rows: int, requests: int, error_rate: float) -> Traffic:
    return Traffic(
        x=rng.normal(size=(rows, 4)),
        c=_categories(rng, rows, SHARES),
        score=_sigmoid(1.5 * rng.normal(size=rows)),
        latency=LAT_MEDIAN_S * np.exp(LAT_SIGMA * rng.normal(size=requests)),
        errors=rng.random(requests) < error_rate,
    )


def _observations(t: Traffic, rows_per_request: int) -> list[Observation]:
    out = []
    n_req = len(t.latency)
    for i in range(n_req):
        lo, hi = i * rows_per_request, min((i + 1) * rows_per_request, len(t.x))
        if lo >= hi:
            out.append(Observation(None, None, float(t.latency[i]), bool(t.errors[i]), float(i)))
            continue
        s = t.score[lo:hi]
        outputs = {"probabilities": np.stack([1 - s, s], axis=1), "label": (s > 0.5).astype(np.int64)}
        inputs = {"num": t.x[lo:hi], "cat": t.c[lo:hi]}
        out.append(Observation(inputs, outputs, float(t.latency[i]), bool(t.errors[i]), float(i)))
    return out


def _run(profile: dict[str, Any], t: Traffic, rows_per_request: int, options: WatchOptions) -> list[Alarm]:
    vm = VersionMonitor("eval", 1, LAYOUT, profile, options)
    alarms: list[Alarm] = []
    obs = _observations(t, rows_per_request)
    for i in range(0, len(obs), 64):
        alarms += vm.feed(obs[i : i + 64])
    return alarms


# ----- scenarios -----------------------------------------------------------------------------


@dataclass
class Scenario:
    id: str
    name: str
    target: str
    bound: int  # a detection counts within this many samples after the change
    median_target: float
    unit: str  # rows | requests
    change: Callable[[np.random.Generator, Traffic, int], None]  # mutates samples from index t0 on
    kind: str  # the incident kind that counts
    subject: str  # the subject that counts ("" any)
    signals: frozenset[str] = frozenset()
    post: int = 2000
    error_rate: float = 0.001


def _shift(col: int, delta: float) -> Callable[[np.random.Generator, Traffic, int], None]:
    def f(rng: np.random.Generator, t: Traffic, t0: int) -> None:
        t.x[t0:, col] += delta

    return f


def _ramp(rng: np.random.Generator, t: Traffic, t0: int) -> None:
    n = len(t.x) - t0
    t.x[t0:, 2] += np.minimum(np.arange(n) / 2000.0, 1.0)


def _scale(factor: float) -> Callable[[np.random.Generator, Traffic, int], None]:
    def f(rng: np.random.Generator, t: Traffic, t0: int) -> None:
        t.x[t0:, 2] *= math.sqrt(factor)

    return f


def _share(rng: np.random.Generator, t: Traffic, t0: int) -> None:
    shares = {"a": 0.4, "b": 0.3 * 0.6 / 0.7, "c": 0.25 * 0.6 / 0.7, "d": 0.15 * 0.6 / 0.7}
    t.c[t0:] = _categories(rng, len(t.c) - t0, shares)


def _unseen(rng: np.random.Generator, t: Traffic, t0: int) -> None:
    hit = rng.random(len(t.c) - t0) < 0.05
    t.c[t0:][hit] = "zzz"


def _score(rng: np.random.Generator, t: Traffic, t0: int) -> None:
    t.score[t0:] = _sigmoid(1.5 * (rng.normal(size=len(t.score) - t0) + 0.5))


def _latency_median(rng: np.random.Generator, t: Traffic, t0: int) -> None:
    t.latency[t0:] *= 1.2


def _latency_tail(rng: np.random.Generator, t: Traffic, t0: int) -> None:
    hit = rng.random(len(t.latency) - t0) < 0.02
    t.latency[t0:][hit] += 0.2


def _error_burst(rng: np.random.Generator, t: Traffic, t0: int) -> None:
    t.errors[t0 : t0 + 500] = rng.random(min(500, len(t.errors) - t0)) < 0.05


def _error_creep(rng: np.random.Generator, t: Traffic, t0: int) -> None:
    t.errors[t0:] = rng.random(len(t.errors) - t0) < 0.005


SCENARIOS = [
    Scenario(
        "S1",
        "mean +1 sigma (x2)",
        "<= 2,000; median <= 100",
        2000,
        100,
        "rows",
        _shift(2, 1.0),
        "drift",
        "x2",
    ),
    Scenario(
        "S1",
        "mean +0.5 sigma (x2)",
        "<= 2,000; median <= 250",
        2000,
        250,
        "rows",
        _shift(2, 0.5),
        "drift",
        "x2",
    ),
    Scenario(
        "S2",
        "ramp 0 -> +1 sigma over 2,000",
        "<= 4,000; median <= 1,000",
        4000,
        1000,
        "rows",
        _ramp,
        "drift",
        "x2",
        post=4000,
    ),
    Scenario(
        "S3", "variance x1.5 (x2)", "<= 2,000; median <= 100", 2000, 100, "rows", _scale(1.5), "drift", "x2"
    ),
    Scenario(
        "S3", "variance x2 (x2)", "<= 2,000; median <= 100", 2000, 100, "rows", _scale(2.0), "drift", "x2"
    ),
    Scenario("S4", "category a 30 % -> 40 %", "median <= 600", 2000, 600, "rows", _share, "drift", "c"),
    Scenario("S4", "unseen category at 5 %", "median <= 250", 2000, 250, "rows", _unseen, "drift", "c"),
    Scenario(
        "S5",
        "score: logit +0.5 sigma",
        "<= 2,000; median <= 500",
        2000,
        500,
        "rows",
        _score,
        "prediction",
        "prediction",
    ),
    Scenario(
        "S6",
        "latency median +20 %",
        "median <= 200 requests",
        2000,
        200,
        "requests",
        _latency_median,
        "latency",
        "latency",
    ),
    Scenario(
        "S6",
        "latency tail: 2 % +200 ms",
        "median <= 500 requests",
        2000,
        500,
        "requests",
        _latency_tail,
        "latency",
        "latency",
    ),
    Scenario(
        "S7",
        "errors 0.5 % -> 5 % for 500",
        ">= 95 % inside the burst",
        500,
        500,
        "requests",
        _error_burst,
        "errors",
        "errors",
        error_rate=0.005,
    ),
    Scenario(
        "S7",
        "errors creep 0.1 % -> 0.5 %",
        "all within 2,000",
        2000,
        2000,
        "requests",
        _error_creep,
        "errors",
        "errors",
        post=3000,
    ),
]


@dataclass
class Result:
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
        profile = _features_profile(0)
        if s.unit == "rows":
            rows = PRE + s.post
            reqs = math.ceil(rows / ROWS_PER_REQUEST)
            t = _traffic(rng, rows, reqs, s.error_rate)
            s.change(rng, t, PRE)
            per = ROWS_PER_REQUEST
        else:
            ref = options.reference_size
            reqs = ref + PRE + s.post
            t = _traffic(rng, 0, reqs, s.error_rate)
            s.change(rng, t, ref + PRE)
            per = 0
        alarms = _run(profile, t, per, options)
        kinds = {"drift"} if s.kind == "drift" else {s.kind}
        t0 = PRE
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
    vm = VersionMonitor("eval", 1, LAYOUT, _features_profile(0), options)
    step = 50_000
    total = 0
    for start in range(0, rows, step):
        n = min(step, rows - start)
        t = _traffic(rng, n, n, 0.001)
        obs = _observations(t, 1)
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
            profile = {"features": {k: _numeric_profile(matrix[:, j]) for j, k in enumerate(keys)}}
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
