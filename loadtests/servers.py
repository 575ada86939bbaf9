"""Servers under test as subprocesses on 127.0.0.1: start, wait for readiness from the log, stop.

Readiness is read from the log, not guessed with sleeps: uvicorn prints ``Uvicorn running on
http://127.0.0.1:PORT`` only after the lifespan startup (for the gateway: every model loaded) and the
bind. The process is then asked once, over HTTP, that it answers. Stop is SIGTERM with a bounded wait.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from pathlib import Path

from loadtests import ROOT

READY_LINE = "Uvicorn running on"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def request(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """One HTTP request to 127.0.0.1:``port``: ``(status, body)``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class ServerError(RuntimeError):
    """A server did not start; the message carries the tail of its log."""


class Server:
    """One server process: ``start()`` returns once it serves; ``stop()`` ends it with SIGTERM."""

    def __init__(
        self,
        name: str,
        command: list[str],
        port: int,
        *,
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
        ready_path: str | None = None,
        start_timeout_s: float = 180.0,
    ) -> None:
        self.name = name
        self.command = command
        self.port = port
        self.env = env or {}
        self.cwd = cwd
        self.ready_path = ready_path
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen[str] | None = None
        self.log: deque[str] = deque(maxlen=200)
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        marker = f"{READY_LINE} http://127.0.0.1:{self.port}"
        # Keeps draining after readiness so a chatty server never blocks on a full pipe.
        for line in self.process.stdout:
            self.log.append(line.rstrip())
            if marker in line:
                self._ready.set()

    def start(self) -> Server:
        env = {**os.environ, **self.env}
        self.process = subprocess.Popen(
            self.command,
            cwd=self.cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, name=f"log-{self.name}", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not self._ready.wait(0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = " | ".join(list(self.log)[-8:])
                self.stop()
                raise ServerError(f"{self.name} did not start: {tail[-600:]}")
        if self.ready_path is not None:
            status, body = request(self.port, "GET", self.ready_path)
            if status != 200:
                self.stop()
                raise ServerError(f"{self.name}: {self.ready_path} answered {status}: {body[:200]!r}")
        return self

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
