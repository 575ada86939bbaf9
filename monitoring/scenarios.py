"""The scenarios of monitoring.md the evaluation runs (S1-S7): each a change made to stable traffic.

A run is stable for ``PRE`` samples, then ``change`` alters the traffic from there on; the delay is counted
in samples of the changed stream after the change (rows for features and predictions, requests for
latency and errors). S0 (stable traffic) and S8 (concept drift) are runs of their own in ``evaluation``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sluice.monitoring.synthetic import Traffic, categories, sigmoid

#: Stable samples before the change.
PRE = 1000

Change = Callable[[np.random.Generator, Traffic, int], None]


@dataclass
class Scenario:
    id: str
    name: str
    target: str
    bound: int  # a detection counts within this many samples after the change
    median_target: float
    unit: str  # rows | requests
    change: Change  # mutates samples from index t0 on
    kind: str  # the incident kind that counts
    subject: str  # the subject that counts ("" any)
    signals: frozenset[str] = frozenset()
    post: int = 2000
    error_rate: float = 0.001


def _shift(col: int, delta: float) -> Change:
    def f(rng: np.random.Generator, t: Traffic, t0: int) -> None:
        t.x[t0:, col] += delta

    return f


def _ramp(rng: np.random.Generator, t: Traffic, t0: int) -> None:
    n = len(t.x) - t0
    t.x[t0:, 2] += np.minimum(np.arange(n) / 2000.0, 1.0)


def _scale(factor: float) -> Change:
    def f(rng: np.random.Generator, t: Traffic, t0: int) -> None:
        t.x[t0:, 2] *= math.sqrt(factor)

    return f


def _share(rng: np.random.Generator, t: Traffic, t0: int) -> None:
    shares = {"a": 0.4, "b": 0.3 * 0.6 / 0.7, "c": 0.25 * 0.6 / 0.7, "d": 0.15 * 0.6 / 0.7}
    t.c[t0:] = categories(rng, len(t.c) - t0, shares)


def _unseen(rng: np.random.Generator, t: Traffic, t0: int) -> None:
    hit = rng.random(len(t.c) - t0) < 0.05
    t.c[t0:][hit] = "zzz"


def _score(rng: np.random.Generator, t: Traffic, t0: int) -> None:
    t.score[t0:] = sigmoid(1.5 * (rng.normal(size=len(t.score) - t0) + 0.5))


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
