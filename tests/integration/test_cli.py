"""The ``sluice`` command as a user runs it: a real process, a real port, real signals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.support import wait_for

pytestmark = pytest.mark.integration

SLOW_ROW = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32"}]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def sluice(
    *args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], str, list[str]]]:
    """Run ``sluice ARGS`` until its log says uvicorn is listening; yield the process, base URL and log."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluice.server.cli", *args, "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # uvicorn logs this line only after the lifespan has started
        seen.append(line)
        if "Uvicorn running on" in line:
            break
    else:
        proc.wait(timeout=10)
        pytest.fail("sluice exited before serving:\n" + "".join(seen))
    log = threading.Thread(target=lambda: seen.extend(proc.stderr or ()), daemon=True)
    log.start()
    try:
        yield proc, f"http://127.0.0.1:{port}", seen
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        log.join(timeout=30)
        proc.stderr.close()


def test_serve_answers_and_sigterm_drains_in_flight_requests(repository: Path) -> None:
    with sluice("serve", "--repository", str(repository)) as (proc, url, log):
        assert httpx.get(f"{url}/v2/health/ready").status_code == 200
        # A request that holds the model for about a second.
        body = {"inputs": [{**SLOW_ROW["inputs"][0], "data": [400.0, 0, 0, 0]}]}
        result: dict[str, Any] = {}

        def slow_call() -> None:
            result["response"] = httpx.post(f"{url}/v2/models/slow/infer", json=body, timeout=60)

        caller = threading.Thread(target=slow_call)
        caller.start()
        wait_for(
            lambda: "sluice_in_flight_requests 1.0" in httpx.get(f"{url}/metrics").text,
            "the slow request to start",
            20,
        )
        proc.send_signal(signal.SIGTERM)
        caller.join(timeout=60)
        assert result["response"].status_code == 200
        assert result["response"].json()["outputs"][0]["data"] == [400.0, 0, 0, 0]
        # uvicorn re-raises the signal once its graceful shutdown is complete.
        assert proc.wait(timeout=30) == -signal.SIGTERM
        assert any("Finished server process" in line for line in log), log
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/v2/health/live")


def refused_start(*args: str) -> subprocess.CompletedProcess[str]:
    """``sluice serve ARGS``, which must refuse to start with exit status 2."""
    proc = subprocess.run(
        [sys.executable, "-m", "sluice.server.cli", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    return proc


def test_serve_refuses_a_broken_config_with_the_key_name(tmp_path: Path, repository: Path) -> None:
    config = tmp_path / "sluice.yaml"
    config.write_text("max_body_byte: 10\n")
    proc = refused_start("--repository", str(repository), "--config", str(config))
    assert "unknown key 'max_body_byte'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models:\n  clf:\n    routes: [oops\n", "not valid YAML"),
        ("models:\n  clf:\n    weights: {1: 50}\n", "unknown key 'models.clf.weights'"),
    ],
)
def test_serve_refuses_a_broken_rollouts_file(
    tmp_path: Path, repository: Path, text: str, message: str
) -> None:
    rollouts = tmp_path / "rollouts.yaml"
    rollouts.write_text(text)
    proc = refused_start("--repository", str(repository), "--rollout", str(rollouts))
    assert proc.stderr.startswith(f"sluice: {rollouts}") and message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_demo_builds_once_and_serves(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    with sluice("demo", "--repository", str(demo)) as (proc, url, log):
        index = httpx.post(f"{url}/v2/repository/index").json()
        assert {(m["name"], m["version"], m["state"]) for m in index} == {
            ("breast_cancer", "1", "READY"),
            ("breast_cancer", "2", "READY"),
            ("iris", "1", "READY"),
            ("diabetes", "1", "READY"),
        }
        row = {
            "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]
        }
        r = httpx.post(f"{url}/v2/models/iris/infer", json=row)
        assert r.status_code == 200
        assert next(o for o in r.json()["outputs"] if o["name"] == "label")["data"] == [0]
        r = httpx.post(f"{url}/v1/models/iris:predict", json={"instances": [[6.7, 3.0, 5.2, 2.3]]})
        assert r.status_code == 200 and r.json()["predictions"][0]["label"] == 2
        assert any("tritonclient" in line for line in log), "the demo prints a tritonclient snippet"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130  # the shell convention for an interrupted command
    digests = {p: p.read_bytes() for p in demo.rglob("model.onnx")}
    rebuilt = subprocess.run(
        [sys.executable, "-m", "sluice.server.cli", "demo", "--repository", str(demo), "--build-only"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "reusing" in rebuilt.stderr
    assert {p: p.read_bytes() for p in demo.rglob("model.onnx")} == digests
