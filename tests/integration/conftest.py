"""Fixtures shared by the integration tests: a real Prometheus (Debian's package) on loopback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Any]:
    """``prometheus(*ports, rules=None, job="sluice", port=None)`` starts ``prometheus`` on 127.0.0.1.

    It scrapes ``127.0.0.1:<port>`` for each port every second (evaluating ``rules`` every second when
    given), listens on ``port`` (default: a free one), keeps its database in the test's temporary
    directory, and returns its base URL. Every one started stops at teardown. Skipped where the binary
    is missing, except under CI.
    """
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is not installed (Debian package prometheus); CI must run this test")
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    started: list[subprocess.Popen[bytes]] = []

    def start(
        *target_ports: int, rules: Path | None = None, job: str = "sluice", port: int | None = None
    ) -> str:
        config: dict[str, Any] = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": job,
                    "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in target_ports]}],
                }
            ],
        }
        if rules is not None:
            config["rule_files"] = [str(rules)]
        n = len(started)
        path = tmp_path / f"prometheus-{n}.yml"
        path.write_text(yaml.safe_dump(config))
        port = port or free_port()
        with (tmp_path / f"prometheus-{n}.log").open("wb") as log:
            process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={path}",
                    f"--storage.tsdb.path={tmp_path / f'tsdb-{n}'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        started.append(process)
        return f"http://127.0.0.1:{port}"

    yield start
    for process in started:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
