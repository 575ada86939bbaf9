"""Shed requests are logged as a summary at most once per interval, never a line per request."""

from __future__ import annotations

import logging

import pytest

from sluice.server.service import ShedLog


def test_a_summary_per_interval_by_model_and_reason(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    shed = ShedLog(every_s=5.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="sluice.service"):
        for i in range(10_000):  # a burst within one interval: no line yet
            now[0] = i * 0.0004
            shed.record("clf", "queue_delay" if i % 4 else "queue_full")
        assert caplog.records == []
        now[0] = 5.0
        shed.record("clf", "queue_delay")
    assert len(caplog.records) == 1
    line = caplog.records[0].getMessage()
    assert line == "shed 10001 requests in the last 5 s (7501 clf: queue_delay, 2500 clf: queue_full)"
