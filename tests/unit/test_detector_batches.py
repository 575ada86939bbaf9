"""``update_many``: a whole array per call, the same alarms and state as ``update`` value by value.

The vectorised sums may differ from the step-by-step ones in the last bits (see
``sluice.monitoring.cusum``), so states are compared to 1e-9 and alarms exactly: on these continuous
streams no sum lands that close to the threshold.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from sluice.converters.artifact.profile import Profile
from sluice.monitoring.bernoulli import BernoulliCUSUM
from sluice.monitoring.cusum import BLOCK, CUSUM, DENSE, update_columns, update_each
from sluice.monitoring.layout import Layout, Observation, WatchOptions
from sluice.monitoring.synthetic import LAYOUT, features_profile, observations, traffic
from sluice.monitoring.version import VersionMonitor

Draw = Callable[[np.random.Generator, int], np.ndarray]


def _state(d: Any) -> tuple[float, ...]:
    if isinstance(d, CUSUM):
        return (d.upper, d.lower)
    return (d.statistic,)


def _normal(mean: float, std: float = 1.0) -> Draw:
    return lambda rng, n: rng.normal(mean, std, n)


def _squares(std: float) -> Draw:
    return lambda rng, n: rng.normal(0.0, std, n) ** 2


def _bits(p: float) -> Draw:
    return lambda rng, n: rng.random(n) < p


# (detector, stable stream, shifted stream): the shift ranges from a slow drift (alarms far apart, found
# by the passes) to a big one (alarms a few values apart, followed value by value).
CASES = [
    pytest.param(lambda: CUSUM(0.25, 8.0), _normal(0.0), _normal(0.6), id="cusum"),
    pytest.param(lambda: CUSUM(0.25, 8.0), _normal(0.0), _normal(-3.0), id="cusum-big-drop"),
    pytest.param(lambda: CUSUM(0.5, 6.0, mu0=2.0), _normal(2.0), _normal(1.2, 2.0), id="cusum-mu0"),
    pytest.param(
        lambda: CUSUM(0.25, 10.0, mu0=1.0, two_sided=False),
        _squares(1.0),
        _squares(1.6),
        id="cusum-one-sided",
    ),
    pytest.param(lambda: BernoulliCUSUM(0.02, 0.06, 5.0), _bits(0.02), _bits(0.08), id="bernoulli"),
    pytest.param(lambda: BernoulliCUSUM(0.3, 0.4, 4.0), _bits(0.3), _bits(0.9), id="bernoulli-dense"),
    pytest.param(lambda: BernoulliCUSUM(0.5, 0.2, 3.0), _bits(0.5), _bits(0.1), id="bernoulli-drop"),
]


def _chunks(rng: np.random.Generator, n: int) -> list[int]:
    """Random chunk sizes: empty, single values, short, and longer than one pass."""
    sizes = []
    while sum(sizes) < n:
        sizes.append(int(rng.choice([0, 1, 2, 7, 50, 300, 1500, BLOCK + 100])))
    return sizes


def _replay(make: Callable[[], Any], values: np.ndarray, sizes: list[int], rng: np.random.Generator) -> None:
    """Feed ``values`` in chunks, each by ``update_many`` or value by value at random, next to a twin
    updated value by value; compare after every chunk."""
    batch, step = make(), make()
    start = 0
    for size in sizes:
        part = values[start : start + size]
        expected = update_each(step, part.tolist()).tolist()
        if rng.random() < 0.7:
            got = batch.update_many(part)
            assert got.dtype.kind == "i"
            got = got.tolist()
        else:
            got = update_each(batch, part.tolist()).tolist()
        assert got == expected, f"alarms after sample {start}"
        assert batch.drift_detected == step.drift_detected
        assert batch.n == step.n
        assert _state(batch) == pytest.approx(_state(step), abs=1e-9)
        start += size


@pytest.mark.parametrize(("make", "stable", "shifted"), CASES)
@pytest.mark.parametrize("seed", range(4))
def test_update_many_matches_update(make: Any, stable: Draw, shifted: Draw, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 12_000
    values = stable(rng, n)
    if seed % 2:  # with a shift, then back
        values[4000:9000] = shifted(rng, 5000)
    _replay(make, values, _chunks(rng, n), rng)


@pytest.mark.parametrize(("make", "stable", "shifted"), CASES)
def test_update_many_alarms_on_a_shift(make: Any, stable: Draw, shifted: Draw) -> None:
    """Not a test that cannot fail: the shifted streams do raise alarms, and the stable ones fewer."""
    rng = np.random.default_rng(0)
    quiet = len(make().update_many(stable(rng, 5000)))
    loud = len(make().update_many(shifted(rng, 5000)))
    assert loud > max(quiet, 3)


def test_dense_alarms_across_calls() -> None:
    """Alarms a few values apart, fed one short chunk after another: the value-by-value path."""
    rng = np.random.default_rng(1)
    values = rng.normal(2.0, 1.0, 5000)
    _replay(lambda: CUSUM(0.25, 4.0), values, [DENSE // 3] * 200, rng)
    assert len(CUSUM(0.25, 4.0).update_many(values)) > 5000 / DENSE


def test_closed_form_by_update_many() -> None:
    """The hand-checked sequence of test_detectors.test_cusum_closed_form, one value per call; a sum equal
    to the threshold is not an alarm (these sums are exact in binary)."""
    detector = CUSUM(k=0.5, threshold=2.0)
    seen = []
    for x in [1.0, 1.5, -0.5, 2.0, 0.0, -3.0, -1.0]:
        hits = detector.update_many(np.array([x]))
        seen.append((detector.upper, detector.lower, detector.drift_detected, detector.n, hits.tolist()))
    assert seen == [
        (0.5, 0.0, False, 1, []),
        (1.5, 0.0, False, 2, []),
        (0.5, 0.0, False, 3, []),
        (2.0, 0.0, False, 4, []),
        (1.5, 0.0, False, 5, []),
        (0.0, 2.5, True, 6, [0]),
        (0.0, 0.5, False, 1, []),  # restarted: the alarm's sums are gone
    ]
    whole = CUSUM(k=0.5, threshold=2.0)
    assert whole.update_many([1.0, 1.5, -0.5, 2.0, 0.0, -3.0, -1.0]).tolist() == [5]
    assert (whole.upper, whole.lower, whole.n) == (0.0, 0.5, 1)


def test_the_last_alarm_stays_until_the_next_update() -> None:
    detector = BernoulliCUSUM(0.1, 0.5, 4.0)  # ln 5 per 1: the third crosses
    assert detector.update_many(np.ones(3, dtype=bool)).tolist() == [2]
    assert detector.drift_detected and detector.n == 3 and detector.statistic > 4.0
    assert detector.update_many(np.array([], dtype=bool)).tolist() == []
    assert detector.drift_detected  # nothing fed, nothing changed
    assert detector.update_many(np.zeros(1, dtype=bool)).tolist() == []
    assert not detector.drift_detected and detector.n == 1 and detector.statistic == 0.0
    # Alarms three values apart, the last on the last value (followed value by value after the first).
    assert detector.update_many(np.ones(9, dtype=bool)).tolist() == [2, 5, 8]
    assert detector.update_many(np.ones(6, dtype=bool)).tolist() == [2, 5]
    assert detector.drift_detected and detector.n == 3


def test_values_that_are_not_finite_act_as_in_update() -> None:
    """A NaN sets the sums to 0 and an infinity raises an alarm, as value by value."""
    rng = np.random.default_rng(3)
    values = rng.normal(0.5, 1.0, 3000)
    values[[10, 700, 701, 2500]] = [np.nan, np.inf, np.nan, -np.inf]
    for make in (lambda: CUSUM(0.25, 6.0), lambda: CUSUM(0.25, 6.0, mu0=0.2, two_sided=False)):
        _replay(make, values, [5, 1000, 2000, 0, 1, 1000], rng)


def test_update_many_wants_one_dimension() -> None:
    with pytest.raises(ValueError, match="1-D"):
        CUSUM().update_many(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="1-D"):
        BernoulliCUSUM().update_many(np.zeros((2, 2), dtype=bool))


# ----- a version under watch ----------------------------------------------------------------------

FEATURES = ("x0", "x1", "x2", "x3")


def _profile(rng: np.random.Generator) -> Profile:
    x = rng.normal(size=(5000, len(FEATURES)))
    features: dict[str, Any] = {}
    for j, name in enumerate(FEATURES):
        counts, edges = np.histogram(x[:, j], bins=10)
        qs = (0.01, 0.25, 0.5, 0.75, 0.99)
        features[name] = {
            "type": "numeric",
            "mean": float(x[:, j].mean()),
            "std": float(x[:, j].std()),
            "quantiles": {str(q): float(v) for q, v in zip(qs, np.quantile(x[:, j], qs), strict=True)},
            "histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
        }
    return Profile.from_json({"features": features})


def test_a_drifted_chunk_alarms_on_its_feature_only() -> None:
    rng = np.random.default_rng(4)
    layout = Layout.from_signature([("x", "FP32", (-1, len(FEATURES)), FEATURES)], [])
    vm = VersionMonitor("m", 1, layout, _profile(rng), WatchOptions())

    def chunk(rows: int, first: int, shift: float = 0.0) -> list[Observation]:
        x = rng.normal(size=(rows, len(FEATURES))).astype(np.float32)
        x[:, 2] += shift
        return [
            Observation({"x": x[i : i + 10]}, None, 0.005, False, float(first + i))
            for i in range(0, rows, 10)
        ]

    assert vm.feed(chunk(3000, 0)) == []
    alarms = vm.feed(chunk(2000, 3000, shift=1.0))
    assert alarms
    assert {(a.stream.kind, a.stream.subject) for a in alarms} == {("drift", "x2")}
    assert "mean" in {a.stream.signal for a in alarms}  # (z**2 rises with the mean too: variance may)
    first = min(a.sample for a in alarms)
    assert 3000 <= first < 3000 + 100  # in samples of the stream: within 100 rows of the shift
    assert min(a.at for a in alarms) - 3000 < 100  # the request it came with
    snapshot = vm.snapshot(mono_now=6000.0, wall_now=0.0)
    x2 = snapshot["features"]["x2"]
    assert x2["alarms"] == len(alarms) and x2["detectors"][0]["samples"] == 5000
    assert all(snapshot["features"][f]["alarms"] == 0 for f in FEATURES if f != "x2")


@pytest.mark.parametrize("watch_missing", [False, True])
def test_the_budget_is_split_over_the_detectors_a_profiled_version_builds(watch_missing: bool) -> None:
    """The budget is fixed before any reference from the first requests: it counts what gets built."""
    options = WatchOptions(reference_size=100, watch_missing=watch_missing)
    vm = VersionMonitor("m", 1, LAYOUT, features_profile(0), options)
    planned = vm.detectors()
    vm.feed(observations(traffic(np.random.default_rng(5), 4000, 200, 0.01), 20))
    snapshot = vm.snapshot(mono_now=300.0, wall_now=0.0)
    assert snapshot["reference"]["latency_and_errors"] == "live"  # health built too
    assert planned == len(vm.streams()) == (4 * 3 if watch_missing else 4 * 2) + 5 + 1 + 2 + 4


@pytest.mark.parametrize("seed", range(6))
def test_update_columns_matches_update_many_per_column(seed: int) -> None:
    """Mixed sides, references and thresholds; shifted, drifting and non-finite columns; chunked calls."""
    rng = np.random.default_rng(seed)
    m, n = 7, 3000
    specs = [
        (0.25, 9.0, 0.0, True),
        (0.25, 9.0, 1.0, False),  # variance-style: one-sided on a mean of 1
        (0.5, 5.0, 0.0, True),
        (0.25, 12.0, 0.2, True),
        (0.1, 4.0, 0.0, True),  # low threshold: alarms come often, some dense
        (0.25, 9.0, 0.0, False),
        (0.25, 9.0, 0.0, True),
    ]
    x = rng.normal(0, 1, (n, m))
    x[:, 1] = x[:, 1] ** 2
    x[1500:, 2] += 1.5  # a shift
    x[:, 3] += np.linspace(0, 1, n)  # a ramp
    x[rng.integers(0, n, 5), 6] = np.nan  # non-finite values take update_many's own path
    x[rng.integers(0, n, 2), 6] = np.inf
    bank = [CUSUM(k, h, mu0, two) for k, h, mu0, two in specs]
    alone = [CUSUM(k, h, mu0, two) for k, h, mu0, two in specs]
    alarms = 0
    offset = 0
    for size in _chunks(rng, n):
        part = x[offset : offset + size]
        got = update_columns(bank, part)
        for j, (b, a) in enumerate(zip(bank, alone, strict=True)):
            assert got[j].tolist() == a.update_many(part[:, j]).tolist(), (j, offset)
            assert b.drift_detected == a.drift_detected and b.n == a.n
            assert _state(b) == pytest.approx(_state(a), abs=1e-9)
            alarms += len(got[j])
        offset += len(part)
    assert offset == n and alarms > 0


def test_update_columns_wants_one_column_per_detector() -> None:
    with pytest.raises(ValueError, match="rows x 2"):
        update_columns([CUSUM(), CUSUM()], np.zeros((4, 3)))
