"""Paired shadow streams: a shadow whose answers start to differ from the primary's raises an incident."""

from __future__ import annotations

import asyncio

import numpy as np

from sluice.monitoring.layout import Layout, WatchOptions
from sluice.monitoring.metrics import Metrics
from sluice.monitoring.monitor import Monitor
from sluice.monitoring.shadow import Pair, ShadowPairs

LAYOUT = Layout.from_signature(
    [("x", "FP32", (-1, 2), ("a", "b"))], [("label", "label"), ("probabilities", "probabilities")], [0, 1]
)
OPTIONS = WatchOptions(reference_size=500)


def pairs(rng: np.random.Generator, n: int, first: int, *, disagree: float, bias: float = 0.0) -> list[Pair]:
    out = []
    for i in range(n):
        p = rng.uniform(0.05, 0.95)
        q = float(np.clip(p + rng.normal(bias, 0.02), 0, 1))
        primary = {"probabilities": np.array([[1 - p, p]])}
        shadow = {"probabilities": np.array([[1 - q, q]])}
        out.append(Pair(primary, shadow, bool(rng.random() >= disagree), float(first + i)))
    return out


def feed(watch: ShadowPairs, chunk: list[Pair]) -> list[tuple[str, float]]:
    found = []
    for start in range(0, len(chunk), 64):
        for alarms in watch.steps(chunk[start : start + 64]):
            found += [(a.stream.signal, a.at) for a in alarms]
    return found


def test_a_rise_in_disagreement_is_caught_against_the_first_pairs() -> None:
    rng = np.random.default_rng(5)
    watch = ShadowPairs("m", 2, LAYOUT, OPTIONS, budget=20)
    assert feed(watch, pairs(rng, 3000, 0, disagree=0.02)) == []  # 500 as reference, 2,500 quiet
    assert watch.disagreement_rate is not None and 0.005 < watch.disagreement_rate < 0.05
    alarms = feed(watch, pairs(rng, 2000, 3000, disagree=0.15))
    assert alarms and {s for s, _ in alarms} == {"disagreement"}
    assert min(at for _, at in alarms) - 3000 < 300


def test_a_shift_in_the_paired_difference_is_caught() -> None:
    rng = np.random.default_rng(6)
    watch = ShadowPairs("m", 2, LAYOUT, OPTIONS, budget=20)
    assert feed(watch, pairs(rng, 3000, 0, disagree=0.0)) == []
    alarms = feed(watch, pairs(rng, 1000, 3000, disagree=0.0, bias=0.02))  # one sd of the difference
    assert {s for s, _ in alarms} == {"difference"}
    assert min(at for _, at in alarms) - 3000 < 200


def test_the_monitor_routes_pairs_to_the_shadow_versions_streams() -> None:
    async def main() -> dict[str, object]:
        monitor = Monitor(Metrics(), cpu_share=1.0)
        await monitor.watch("m", 2, LAYOUT, None, OPTIONS)
        await monitor.start()
        rng = np.random.default_rng(7)
        for pair in pairs(rng, 600, 0, disagree=0.0):
            monitor.observe_pair("m", 2, pair.primary, pair.shadow, pair.agree)
        monitor.observe_pair("m", 9, {}, {}, True)  # not watched: ignored
        for _ in range(1000):  # bounded: the background task drains the queue
            body = monitor.snapshot("m", 2)
            if body["pending"] == 0 and body["shadow"] is not None and body["shadow"]["pairs"] == 600:
                break
            await asyncio.sleep(0.01)
        await monitor.stop()
        return body

    body = asyncio.run(main())
    shadow = body["shadow"]
    assert isinstance(shadow, dict)
    assert shadow["pairs"] == 600 and shadow["reference_from"] == "first_pairs"
    assert [d["signal"] for d in shadow["detectors"]] == ["disagreement", "difference"]
    assert shadow["anomaly"] is False
