"""The router: exact counts with an injected random source, a binomial bound, sticky consistency."""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import subprocess
import sys

import pytest

from sluice.converters.artifact.errors import BadRequestError
from sluice.server.routing import BUCKETS, Router, Split, bucket


def counter(n: int) -> object:
    """A random source that walks [0, 1) in n equal steps: every draw is known in advance."""
    steps = itertools.count()
    return lambda: (next(steps) % n) / n


def test_injected_random_source_gives_exact_counts() -> None:
    router = Router("m", Split.of({7: 75, 8: 25}, stable=7), random_source=counter(1000))  # type: ignore[arg-type]
    picks = [router.pick({}, {}) for _ in range(1000)]
    assert sum(p.version == 8 for p in picks) == 250
    assert sum(p.version == 7 for p in picks) == 750
    assert {p.reason for p in picks} == {"split"}
    # The candidate owns the low end: the first quarter of the draws.
    assert all(p.version == 8 for p in picks[:250])


def test_100000_decisions_within_a_binomial_bound() -> None:
    rng = random.Random(20240601)
    p, n = 0.05, 100_000
    router = Router("m", Split.of({1: 95, 2: 5}, stable=1), random_source=rng.random)
    k = sum(router.pick({}, {}).version == 2 for _ in range(n))
    # 5.3 standard deviations: a false failure about once in 10 million runs.
    assert abs(k - n * p) <= 5.3 * math.sqrt(n * p * (1 - p)), k


def test_one_version_at_100_is_the_default_without_a_draw() -> None:
    def never() -> float:
        raise AssertionError("no draw expected")

    route = Router("m", Split.of({3: 100, 4: 0}, stable=3), random_source=never).pick({}, {})
    assert (route.version, route.reason) == (3, "default")


def test_override_allowed_and_refused() -> None:
    router = Router("m", Split.of({1: 100}), override_header="X-Model-Version", allow=(1, 2))
    assert router.pick({"x-model-version": "2"}, {}).reason == "override"
    assert router.pick({"x-model-version": "2"}, {}).version == 2
    for bad in ("3", "two", "-1"):
        with pytest.raises(BadRequestError, match="not an allowed version") as info:
            router.pick({"x-model-version": bad}, {})
        assert info.value.status == 400


def test_override_wins_over_sticky() -> None:
    router = Router(
        "m",
        Split.of({1: 50, 2: 50}, stable=1),
        override_header="x-v",
        allow=(1,),
        sticky=("header", "x-user"),
    )
    assert router.pick({"x-v": "1", "x-user": "u"}, {}).reason == "override"


def sticky_versions(weight: float, keys: list[str]) -> list[int]:
    router = Router(
        "churn", Split.of({7: 100 - weight, 8: weight}, stable=7), sticky=("query", "user"), salt="s1"
    )
    return [router.pick({}, {"user": k}).version for k in keys]


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
