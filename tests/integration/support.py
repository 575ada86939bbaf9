"""Small helpers the integration tests share: a bounded condition wait and reading one /metrics sample."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 15) -> None:
    """Poll ``condition`` until it holds; fail the test with ``what`` if it has not within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def metric(server: Any, line_start: str) -> float:
    """The value of the first /metrics line starting with ``line_start`` (0 when there is none)."""
    for line in server.client.get("/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
