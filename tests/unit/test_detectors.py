"""The detectors: River's contract (a shared check suite), closed-form CUSUM behaviour, calibration."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pytest

from sluice.monitoring.bernoulli import BernoulliCUSUM
from sluice.monitoring.calibration import bernoulli_threshold, cusum_alarms, per_detector_arl, replay_alarms
from sluice.monitoring.cusum import CUSUM


def first_alarm(detector: Any, values: Any) -> int | None:
    """The 1-based step of the first alarm on ``values``, or None."""
    for n, x in enumerate(values, start=1):
        detector.update(x)
        if detector.drift_detected:
            return n
    return None


DETECTORS = [
    pytest.param(
        lambda: CUSUM(k=0.25, threshold=10.0), lambda r: r.gauss(0, 1), lambda r: r.gauss(3, 1), id="cusum"
    ),
    pytest.param(
        lambda: CUSUM(k=0.25, threshold=20.0, mu0=1.0, two_sided=False),
        lambda r: r.gauss(0, 1) ** 2,
        lambda r: r.gauss(0, 3) ** 2,
        id="cusum-variance",
    ),
    pytest.param(
        lambda: BernoulliCUSUM(0.01, 0.05, 4.0),
        lambda r: r.random() < 0.01,
        lambda r: r.random() < 0.5,
        id="bernoulli",
    ),
]


@pytest.mark.parametrize(("make", "stable", "shifted"), DETECTORS)
def test_river_contract(make: Any, stable: Any, shifted: Any) -> None:
    """update returns None, drift_detected is a bool, an alarm comes after a change, reset after it."""
    rng = random.Random(0)
    detector = make()
    for _ in range(200):
        assert detector.update(stable(rng)) is None
        assert detector.drift_detected is False
    n = first_alarm(detector, (shifted(rng) for _ in range(1000)))
    assert n is not None and n < 200
    detector.update(stable(rng))
    assert detector.drift_detected is False
    assert detector.statistic < detector.threshold
    # A clone starts fresh and behaves like a new one.
    assert detector.clone().statistic == 0.0


def test_river_contract_base_classes() -> None:
    from river import base

    assert isinstance(CUSUM(), base.DriftDetector)
    assert isinstance(BernoulliCUSUM(), base.BinaryDriftDetector)


def test_cusum_closed_form() -> None:
    """S+ = max(0, S+ + x - k), S- = max(0, S- - x - k), alarm when one exceeds h, fresh after."""
    detector = CUSUM(k=0.5, threshold=2.0)
    seen = []
    for x in [1.0, 1.5, -0.5, 2.0, 0.0, -3.0, -1.0]:
        detector.update(x)
        seen.append((detector.upper, detector.lower, detector.drift_detected))
    assert seen == [
        (0.5, 0.0, False),
        (1.5, 0.0, False),
        (0.5, 0.0, False),
        (2.0, 0.0, False),  # equal to h is not above it
        (1.5, 0.0, False),
        (0.0, 2.5, True),  # a drop: the lower sum crosses
        (0.0, 0.5, False),  # reset first, then -1 - (-0.5) ... from zero: 1.0 - 0.5
    ]


def test_cusum_alarms_exactly_when_the_closed_form_says() -> None:
    """On a constant shift d > k the upper sum is n (d - k): the alarm comes at n = floor(h / (d - k)) + 1."""
    k, h, d = 0.25, 12.0, 1.0
    expected = math.floor(h / (d - k)) + 1  # 17
    assert first_alarm(CUSUM(k=k, threshold=h), [d] * 100) == expected == 17


def test_bernoulli_cusum_closed_form() -> None:
    """S = max(0, S + ln(p1/p0)) on a 1 and max(0, S + ln((1-p1)/(1-p0))) on a 0."""
    p0, p1 = 0.1, 0.2
    w1, w0 = math.log(2.0), math.log(0.8 / 0.9)
    detector = BernoulliCUSUM(p0, p1, threshold=1.9)
    expected = [w1, 2 * w1, 2 * w1 + w0]
    for x, want in zip([True, True, False], expected, strict=True):
        detector.update(x)
        assert detector.statistic == pytest.approx(want)
        assert not detector.drift_detected
    detector.update(True)  # 3 w1 + w0 = 1.962 > 1.9
    assert detector.statistic == pytest.approx(3 * w1 + w0)
    assert detector.drift_detected
    # All ones from zero: the alarm comes at n = floor(h / ln(p1/p0)) + 1.
    assert first_alarm(BernoulliCUSUM(p0, p1, threshold=5.0), [True] * 100) == math.floor(5.0 / w1) + 1 == 8


def test_bernoulli_cusum_watches_a_drop() -> None:
    detector = BernoulliCUSUM(p0=0.5, p1=0.2, threshold=3.0)
    assert first_alarm(detector, [False] * 100) == math.floor(3.0 / math.log(0.8 / 0.5)) + 1


def test_bernoulli_cusum_refuses_bad_rates() -> None:
    with pytest.raises(ValueError, match="p0"):
        BernoulliCUSUM(0.0, 0.1)


def test_vectorised_replay_matches_the_detector_step_by_step() -> None:
    rng = np.random.default_rng(5)
    z = rng.normal(0.1, 1.0, 50_000)
    for h in (2.0, 5.0, 9.0):
        fast = cusum_alarms(np.stack([z - 0.25, -z - 0.25]), h, block=1000)
        assert fast == replay_alarms(CUSUM(0.25, h), z.tolist())
    bits = rng.random(50_000) < 0.02
    w1, w0 = math.log(0.05 / 0.02), math.log(0.95 / 0.98)
    assert cusum_alarms(np.where(bits, w1, w0), 4.0, block=777) == replay_alarms(
        BernoulliCUSUM(0.02, 0.05, 4.0), bits.tolist()
    )


def test_calibrated_bernoulli_threshold_meets_its_run_length() -> None:
    """The extrapolated threshold holds on a long replay: about target_arl samples per false alarm."""
    target = 20_000.0
    h = bernoulli_threshold(0.01, 0.03, target)
    rng = np.random.default_rng(11)
    n = 2_000_000
    alarms = cusum_alarms(np.where(rng.random(n) < 0.01, math.log(3.0), math.log(0.97 / 0.99)), h)
    assert 0.4 * n / target <= alarms <= 2.0 * n / target


def test_budget_split() -> None:
    assert per_detector_arl(10.0, 20) == pytest.approx(200_000)
    assert per_detector_arl(10.0, 2) == pytest.approx(100_000)  # capped at 1 per 100k per detector
