"""The direct executor's inline guard: slow inline calls move a version to threads, one blip does not."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from sluice.server.execution import executors
from sluice.server.execution.executors import INLINE_LIMIT_S, INLINE_STRIKES, DirectExecutor


class FakeClock:
    """``perf_counter`` for the executors module; each model call takes what the test says."""

    def __init__(self) -> None:
        self.now = 0.0


def run_calls(monkeypatch: pytest.MonkeyPatch, durations: list[float]) -> DirectExecutor:
    clock = FakeClock()
    monkeypatch.setattr(executors.time, "perf_counter", lambda: clock.now)
    calls = iter(durations)

    def model(inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        clock.now += next(calls)
        return {"y": inputs["x"] * 2}

    executor = DirectExecutor(model, inline=True, threads=1)

    async def main() -> None:
        for _ in durations:
            out = await executor.infer({"x": np.ones(1)}, 1)
            assert out["y"].tolist() == [2.0]
        await executor.stop()

    asyncio.run(main())
    return executor


def test_slow_calls_in_a_row_move_the_version_to_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    slow = INLINE_LIMIT_S * 5
    executor = run_calls(monkeypatch, [0.0001] * 3 + [slow] * INLINE_STRIKES)
    assert executor.inline is False


def test_isolated_slow_calls_keep_it_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    slow = INLINE_LIMIT_S * 5
    pattern = ([slow] * (INLINE_STRIKES - 1) + [0.0001]) * 4
    executor = run_calls(monkeypatch, pattern)
    assert executor.inline is True
