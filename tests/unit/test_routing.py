"""The router: exact counts with an injected random source, a binomial bound, sticky consistency."""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from sluice.converters.artifact.errors import (
    BadRequestError,
    ModelNotFoundError,
    NotReadyError,
    VersionNotFoundError,
)
from sluice.server.routing import (
    BUCKETS,
    ModelRoutes,
    Policy,
    Route,
    Routing,
    RoutingTable,
    Split,
    Target,
    bucket,
    decide,
    lookup,
    parse_version,
)


def counter(n: int) -> Callable[[], float]:
    """A random source that walks [0, 1) in n equal steps: every draw is known in advance."""
    steps = itertools.count()
    return lambda: (next(steps) % n) / n


def never() -> float:
    raise AssertionError("no draw expected")


def table(
    weights: dict[int, float],
    stable: int | None = None,
    *,
    ready: set[int] | None = None,
    waiting: dict[int, str] | None = None,
    labels: dict[str, int] | None = None,
    model: str = "m",
    **policy: Any,
) -> RoutingTable:
    routing = Routing()
    versions = frozenset(ready if ready is not None else weights)
    routing.publish_versions({model: ModelRoutes(versions, waiting or {}, labels or {})})
    routing.publish_policies({model: Policy(split=Split.of(weights, stable) if weights else None, **policy)})
    return routing.table


def pick(
    t: RoutingTable,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    draw: Callable[[], float] = random.random,
    target: Target | None = None,
) -> Route:
    return decide(t, target or Target("m"), headers or {}, query or {}, draw)


def test_injected_random_source_gives_exact_counts() -> None:
    t = table({7: 75, 8: 25}, stable=7)
    draw = counter(1000)
    picks = [pick(t, draw=draw) for _ in range(1000)]
    assert sum(p.version == 8 for p in picks) == 250
    assert sum(p.version == 7 for p in picks) == 750
    assert {p.reason for p in picks} == {"split"}
    # The candidate owns the low end: the first quarter of the draws.
    assert all(p.version == 8 for p in picks[:250])


def test_100000_decisions_within_a_binomial_bound() -> None:
    rng = random.Random(20240601)
    p, n = 0.05, 100_000
    t = table({1: 95, 2: 5}, stable=1)
    k = sum(pick(t, draw=rng.random).version == 2 for _ in range(n))
    # 5.3 standard deviations: a false failure about once in 10 million runs.
    assert abs(k - n * p) <= 5.3 * math.sqrt(n * p * (1 - p)), k


def test_one_version_at_100_is_the_default_without_a_draw() -> None:
    route = pick(table({3: 100, 4: 0}, stable=3), draw=never)
    assert (route.version, route.reason) == (3, "default")


def test_override_allowed_and_refused() -> None:
    t = table({1: 100}, ready={1, 2}, override_header="x-model-version", allow=frozenset({1, 2}))
    assert pick(t, {"x-model-version": "2"}) == Route(2, "override")
    for bad in ("3", "two", "-1", "²", "١", "２", "9" * 5000):
        with pytest.raises(BadRequestError, match="not an allowed version") as info:
            pick(t, {"x-model-version": bad})
        assert info.value.status == 400
        assert len(info.value.message) < 200  # a 5,000-digit value is not echoed whole


def test_override_wins_over_sticky() -> None:
    t = table(
        {1: 50, 2: 50}, stable=1, override_header="x-v", allow=frozenset({1}), sticky=("header", "x-user")
    )
    assert pick(t, {"x-v": "1", "x-user": "u"}).reason == "override"


def test_the_whole_order_explicit_label_override_sticky_split_default() -> None:
    t = table(
        {1: 50, 2: 50},
        stable=1,
        ready={1, 2, 3},
        labels={"blue": 3},
        override_header="x-v",
        allow=frozenset({2}),
        sticky=("header", "x-user"),
    )
    everything = {"x-v": "2", "x-user": "u"}
    assert pick(t, everything, target=Target("m", version=3)) == Route(3, "explicit")
    assert pick(t, everything, target=Target("m", label="blue")) == Route(3, "label")
    assert pick(t, everything) == Route(2, "override")
    assert pick(t, {"x-user": "u"}, draw=never).reason == "sticky"
    assert pick(t, {}, draw=lambda: 0.0) == Route(2, "split")
    assert pick(table({}, ready={4, 5}), draw=never) == Route(5, "default")  # the newest ready version


def test_a_routed_version_that_is_not_ready_falls_back_to_stable() -> None:
    t = table({1: 50, 2: 50}, stable=1, ready={1}, waiting={2: "LOADING"}, labels={"stable": 1})
    assert {pick(t).version for _ in range(50)} == {1}
    assert pick(t, draw=lambda: 0.0) == Route(1, "default")


def test_pinned_versions_that_do_not_serve_say_why() -> None:
    t = table({1: 100}, ready={1}, waiting={2: "UNAVAILABLE: bad manifest"})
    with pytest.raises(NotReadyError, match="version 2 is UNAVAILABLE: bad manifest"):
        pick(t, target=Target("m", version=2))
    with pytest.raises(VersionNotFoundError, match="no version 9"):
        pick(t, target=Target("m", version=9))
    with pytest.raises(VersionNotFoundError, match="no label 'green'"):
        pick(t, target=Target("m", label="green"))
    with pytest.raises(ModelNotFoundError, match="unknown model 'other'"):
        pick(t, target=Target("other"))


def test_one_label_namespace_where_the_rollouts_file_wins() -> None:
    routing = Routing()
    routing.publish_versions({"m": ModelRoutes(frozenset({1, 2, 3}), {}, {"stable": 1, "blue": 3})})
    assert lookup(routing.table, Target("m")) == Route(1, "default")  # config.yaml's stable
    routing.publish_policies({"m": Policy(labels={"stable": 2, "canary": 3})})
    assert lookup(routing.table, Target("m", label="stable")) == Route(2, "label")
    assert lookup(routing.table, Target("m", label="blue")) == Route(3, "label")
    assert lookup(routing.table, Target("m")) == Route(2, "default")


def test_only_ascii_digits_are_versions() -> None:
    assert [parse_version(s) for s in ("1", "007", "42")] == [1, 7, 42]
    for text in ("", "0", "-1", "1.0", "²", "١", "２", "1e3", " 1", "9" * 5000):
        assert parse_version(text) is None, text


def sticky_versions(weight: float, keys: list[str]) -> list[int]:
    t = table({7: 100 - weight, 8: weight}, stable=7, sticky=("query", "user"), salt="s1", model="churn")
    return [decide(t, Target("churn"), {}, {"user": k}, never).version for k in keys]


def test_sticky_keys_stay_put_as_the_weight_grows() -> None:
    keys = [f"user-{i}" for i in range(5000)]
    previous = sticky_versions(1, keys)
    for weight in (5, 25, 50, 99, 100):
        now = sticky_versions(weight, keys)
        assert all(b == 8 for a, b in zip(previous, now, strict=True) if a == 8), weight
        share = sum(v == 8 for v in now) / len(keys)
        assert abs(share - weight / 100) < 0.05, (weight, share)
        previous = now


def test_sticky_buckets_are_the_same_in_another_process() -> None:
    keys = [f"k{i}" for i in range(200)]
    here = [bucket("salt", "churn", k) for k in keys]
    code = (
        "from sluice.server.routing import bucket\n"
        "import json\n"
        f"print(json.dumps([bucket('salt', 'churn', k) for k in {keys!r}]))\n"
    )
    # A different PYTHONHASHSEED would change hash(): the buckets must not care.
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "123"},
    )
    assert json.loads(out.stdout) == here
    assert all(0 <= b < BUCKETS for b in here)
    assert bucket("other-salt", "churn", "k1") != bucket("salt", "churn", "k1") or bucket(
        "other-salt", "churn", "k2"
    ) != bucket("salt", "churn", "k2")
