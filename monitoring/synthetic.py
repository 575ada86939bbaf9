"""The synthetic model the evaluation (``sluice.monitoring.evaluation``) watches: profiles and traffic.

Four N(0,1) features ``x0..x3`` in one FP32 input, one categorical ``c`` (shares a .3, b .3, c .25,
d .15) in a BYTES input, a binary classifier's label and probabilities (the score a sigmoid of a normal),
lognormal latency (median 5 ms) and a base error rate. Profiles are built from a separate 5,000-row sample,
as a converter would.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sluice.converters.artifact.profile import (
    CategoricalFeature,
    ClassifierOutputs,
    Feature,
    Histogram,
    NumericFeature,
    Profile,
    ValueSummary,
)
from sluice.monitoring.layout import Layout, Observation, WatchOptions
from sluice.monitoring.streams import Alarm
from sluice.monitoring.version import VersionMonitor

FEATURES = ("x0", "x1", "x2", "x3")
SHARES = {"a": 0.3, "b": 0.3, "c": 0.25, "d": 0.15}
LAT_MEDIAN_S = 0.005
LAT_SIGMA = 0.25
ROWS_PER_REQUEST = 20
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def _quantiles(v: np.ndarray) -> dict[str, float]:
    return {str(q): float(x) for q, x in zip(QUANTILES, np.quantile(v, QUANTILES), strict=True)}


def numeric_profile(v: np.ndarray) -> NumericFeature:
    counts, edges = np.histogram(v, bins=10)
    return NumericFeature(
        mean=float(v.mean()),
        std=float(v.std()),
        min=float(v.min()),
        max=float(v.max()),
        quantiles=_quantiles(v),
        histogram=Histogram(tuple(edges.tolist()), tuple(counts.tolist())),
    )


def categories(rng: np.random.Generator, n: int, shares: dict[str, float]) -> np.ndarray:
    keys = list(shares)
    p = np.asarray([shares[k] for k in keys])
    return np.asarray(keys, dtype=object)[rng.choice(len(keys), n, p=p / p.sum())]


def sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-z)))


def features_profile(seed: int) -> Profile:
    rng = np.random.default_rng(10_000 + seed)
    x = rng.normal(size=(5000, 4))
    c = categories(rng, 5000, SHARES)
    score = sigmoid(1.5 * rng.normal(size=5000))
    names, counts = np.unique(c.astype(str), return_counts=True)
    features: dict[str, Feature] = {f: numeric_profile(x[:, j]) for j, f in enumerate(FEATURES)}
    features["c"] = CategoricalFeature(
        {str(k): float(v) / 5000 for k, v in zip(names, counts, strict=True)}, other=0.0, distinct=len(names)
    )
    outputs = ClassifierOutputs(
        {"0": float(np.mean(score <= 0.5)), "1": float(np.mean(score > 0.5))},
        "positive_class_probability",
        _quantiles(score),
        ValueSummary.of(score, _quantiles(score)),
    )
    return Profile(features, outputs, rows=5000)


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


def traffic(rng: np.random.Generator, rows: int, requests: int, error_rate: float) -> Traffic:
    return Traffic(
        x=rng.normal(size=(rows, 4)),
        c=categories(rng, rows, SHARES),
        score=sigmoid(1.5 * rng.normal(size=rows)),
        latency=LAT_MEDIAN_S * np.exp(LAT_SIGMA * rng.normal(size=requests)),
        errors=rng.random(requests) < error_rate,
    )


def observations(t: Traffic, rows_per_request: int) -> list[Observation]:
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


def run(profile: Profile, t: Traffic, rows_per_request: int, options: WatchOptions) -> list[Alarm]:
    """Feed ``t`` to a fresh version monitor in chunks of 64 requests: every alarm raised."""
    vm = VersionMonitor("eval", 1, LAYOUT, profile, options)
    alarms: list[Alarm] = []
    obs = observations(t, rows_per_request)
    for i in range(0, len(obs), 64):
        alarms += vm.feed(obs[i : i + 64])
    return alarms
