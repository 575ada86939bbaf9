"""A bounded open-loop HTTP load generator: requests leave at a fixed rate, whatever the server does.

Request ``i`` is scheduled at ``t0 + i / rate`` and its latency is measured from that scheduled time, not
from when it could actually be sent, so a stalled server shows up in the percentiles instead of quietly
slowing the load (no coordinated omission). Requests go over keep-alive HTTP/1.1 connections from a pool
(``asyncio.Protocol`` on uvloop when installed, no HTTP library on the hot path); when every pooled
connection is busy a request waits for one, and that wait counts in its latency.

Bounded twice: at most ``rate x duration`` requests (and never more than ``max_requests``), and a hard
stop at ``duration + timeout_s`` seconds, when what is still in flight is counted as ``timeout``. Only
``http://127.0.0.1`` URLs are accepted.

The generator checks itself: ``send_lag`` is how late requests actually left compared with their
schedule (timer granularity, a busy client), and ``kept_up`` says whether it offered the rate it was
asked for. A report where ``kept_up`` is false measured the generator, not the server.

    python -m loadtests.openloop --url http://127.0.0.1:8000/v2/models/logreg/infer \\
        --rate 2000 --duration 10 --body body.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import numpy as np

ALLOWED_HOST = "127.0.0.1"


class RefusedTargetError(ValueError):
    """The URL does not point at 127.0.0.1 over plain HTTP."""


def parse_target(url: str) -> tuple[str, int, str]:
    """``(host, port, path)`` of an ``http://127.0.0.1:PORT/...`` URL; anything else is refused."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname != ALLOWED_HOST:
        raise RefusedTargetError(f"refusing {url!r}: only http://{ALLOWED_HOST} is allowed")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return ALLOWED_HOST, parts.port or 80, path


def build_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """One HTTP/1.1 keep-alive POST, as bytes, sent unchanged for every request."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time; parses just status and length.

    Callback-driven, with no task or future per request: the generator's own cost per request must stay
    far below the server's, or it measures itself.
    """

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.scheduled = 0.0
        self.sent_at = 0.0
        self.busy = False
        self._buffer = bytearray()
        self._status = 0
        self._need = -1  # bytes of the whole response once its head is parsed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have the same methods.
        self.transport = cast(asyncio.Transport, transport)

    def start(self, scheduled: float) -> None:
        assert self.transport is not None
        self.busy = True
        self.scheduled = scheduled
        self.sent_at = time.perf_counter()
        self.transport.write(self.pool.payload)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if self._need < 0:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end]).decode("latin-1").split("\r\n")
            self._status = int(head[0].split(" ", 2)[1])
            length = None
            for line in head[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "transfer-encoding":
                    self._fail("chunked_response")
                    return
            if length is None:
                self._fail("no_content_length")
                return
            self._need = end + 4 + length
        if len(buffer) >= self._need:
            del buffer[: self._need]
            self._need = -1
            self.busy = False
            self.pool.finished(self, self._status)

    def _fail(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        self.pool.failed(self, reason)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail("connection_lost")


class _Pool:
    """Keep-alive connections, the requests waiting for one, and what came back."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, host: str, port: int, payload: bytes, limit: int
    ) -> None:
        self.loop = loop
        self.host = host
        self.port = port
        self.payload = payload
        self.limit = limit
        self.idle: deque[_Connection] = deque()
        self.backlog: deque[float] = deque()  # scheduled times of requests waiting for a connection
        self.opened: list[_Connection] = []
        self.connecting = 0
        self.outstanding = 0
        self.latencies: list[float] = []
        self.service: list[float] = []
        self.lags: list[float] = []
        self.errors: Counter[str] = Counter()
        self.last_done = 0.0
        self.drained: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def connect(self) -> _Connection:
        _, conn = await self.loop.create_connection(lambda: _Connection(self), self.host, self.port)
        self.opened.append(conn)
        return conn

    def submit(self, scheduled: float) -> None:
        self.outstanding += 1
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                self._start(conn, scheduled)
                return
        self.backlog.append(scheduled)
        if len(self.opened) + self.connecting < self.limit and self.connecting < len(self.backlog):
            self.connecting += 1
            task = self.loop.create_task(self._open())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _start(self, conn: _Connection, scheduled: float) -> None:
        conn.start(scheduled)
        self.lags.append(conn.sent_at - scheduled)

    async def _open(self) -> None:
        try:
            conn = await self.connect()
        except OSError as exc:
            self.connecting -= 1
            if self.backlog:
                self.backlog.popleft()
                self._settle(type(exc).__name__)
            return
        self.connecting -= 1
        self._next(conn)

    def _next(self, conn: _Connection) -> None:
        if self.backlog:
            self._start(conn, self.backlog.popleft())
        else:
            self.idle.append(conn)

    def finished(self, conn: _Connection, status: int) -> None:
        now = time.perf_counter()
        self.last_done = now
        if status == 200:
            self.latencies.append(now - conn.scheduled)
            self.service.append(now - conn.sent_at)
            self._settle(None)
        else:
            self._settle(str(status))
        self._next(conn)

    def failed(self, conn: _Connection, reason: str) -> None:
        if conn.busy:
            conn.busy = False
            self._settle(reason)
        # Whoever waits for a connection gets a new one.
        if self.backlog and len(self.opened) + self.connecting - 1 < self.limit:
            self.connecting += 1
            task = self.loop.create_task(self._open())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _settle(self, error: str | None) -> None:
        if error is not None:
            self.errors[error] += 1
        self.outstanding -= 1
        if self.outstanding == 0 and self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for conn in self.opened:
            conn.closed = True
            if conn.transport is not None:
                conn.transport.close()


@dataclass
class Report:
    """What one open-loop run measured; latencies in milliseconds from each request's scheduled time."""

    rate: float
    duration_s: float
    scheduled: int
    sent: int
    completed: int
    ok: int
    achieved_rps: float
    errors: dict[str, int] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    service_ms: dict[str, float] = field(default_factory=dict)
    send_lag_ms: dict[str, float] = field(default_factory=dict)
    connections: int = 0
    kept_up: bool = True

    def summary(self) -> str:
        lat = self.latency_ms
        return (
            f"offered {self.rate:.0f}/s achieved {self.achieved_rps:.0f}/s ok {self.ok}/{self.scheduled} "
            f"p50 {lat.get('p50', float('nan')):.2f} p90 {lat.get('p90', float('nan')):.2f} "
            f"p99 {lat.get('p99', float('nan')):.2f} p99.9 {lat.get('p99.9', float('nan')):.2f} ms; "
            f"errors {self.errors or 'none'}; send lag p99 {self.send_lag_ms.get('p99', 0):.2f} ms; "
            f"kept up: {self.kept_up}"
        )


def percentiles(values_s: list[float] | np.ndarray) -> dict[str, float]:
    """p50/p90/p99/p99.9 and max of seconds, in milliseconds."""
    if len(values_s) == 0:
        return {}
    arr = np.asarray(values_s, dtype=np.float64) * 1e3
    q = np.percentile(arr, [50, 90, 99, 99.9])
    return {
        "p50": float(q[0]),
        "p90": float(q[1]),
        "p99": float(q[2]),
        "p99.9": float(q[3]),
        "max": float(arr.max()),
    }


async def run(
    url: str,
    *,
    rate: float,
    duration_s: float,
    body: bytes,
    headers: dict[str, str] | None = None,
    max_connections: int = 256,
    warm_connections: int = 16,
    timeout_s: float = 5.0,
    max_requests: int = 1_000_000,
) -> Report:
    """Offer ``rate`` requests/s for ``duration_s`` seconds to ``url`` and report what came back."""
    if rate <= 0 or duration_s <= 0:
        raise ValueError("rate and duration must be positive")
    host, port, path = parse_target(url)
    payload = build_request(host, port, path, body, {"Content-Type": "application/json", **(headers or {})})
    loop = asyncio.get_running_loop()
    # uvloop's loop.time() ticks in whole milliseconds: too coarse for latencies, so stamps use this.
    clock = time.perf_counter
    count = min(int(rate * duration_s), max_requests)
    pool = _Pool(loop, host, port, payload, max_connections)
    for _ in range(min(warm_connections, max_connections)):
        pool.idle.append(await pool.connect())

    t0 = clock() + 0.01
    interval = 1.0 / rate
    hard_stop = t0 + duration_s + timeout_s
    sent = 0
    try:
        while sent < count and clock() < hard_stop:
            now = clock()
            # Everything due by now leaves at once; the loop's timer wakes about once a millisecond.
            while sent < count and t0 + sent * interval <= now:
                pool.submit(t0 + sent * interval)
                sent += 1
            if sent < count:
                await asyncio.sleep(max(t0 + sent * interval - clock(), 0.0))
        if pool.outstanding:
            pool.drained = loop.create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pool.drained, max(hard_stop - clock(), 0.001))
        if pool.outstanding:
            pool.errors["timeout"] += pool.outstanding
    finally:
        pool.close()

    elapsed = max((pool.last_done or clock()) - t0, 1e-9)
    ok = len(pool.latencies)
    lag = percentiles(pool.lags)
    # Kept up: every request left on time, give or take a few timer ticks and the machine's jitter.
    kept_up = sent == count and lag.get("p99", 0.0) < 5.0
    return Report(
        rate=rate,
        duration_s=duration_s,
        scheduled=count,
        sent=sent,
        completed=ok + sum(v for k, v in pool.errors.items() if k.isdigit()),
        ok=ok,
        achieved_rps=ok / elapsed,
        errors=dict(pool.errors),
        latency_ms=percentiles(pool.latencies),
        service_ms=percentiles(pool.service),
        send_lag_ms=lag,
        connections=len(pool.opened),
        kept_up=kept_up,
    )


def run_sync(url: str, **kwargs: object) -> Report:
    """``run`` on a fresh event loop (uvloop when installed)."""
    try:
        import uvloop
    except ImportError:  # plain asyncio works, with more client overhead
        return asyncio.run(run(url, **kwargs))  # type: ignore[arg-type]
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(run(url, **kwargs))  # type: ignore[arg-type]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="http://127.0.0.1:PORT/path (no other host)")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, required=True, help="seconds of load")
    parser.add_argument("--body", type=Path, required=True, help="file whose bytes are POSTed")
    parser.add_argument("--header", action="append", default=[], help="extra 'Name: value' header")
    parser.add_argument("--max-connections", type=int, default=256)
    parser.add_argument("--timeout", type=float, default=5.0, help="grace after the load, seconds")
    parser.add_argument("--max-requests", type=int, default=1_000_000)
    parser.add_argument("--json", action="store_true", help="print the whole report as JSON")
    args = parser.parse_args()
    headers = dict(h.split(":", 1) for h in args.header)
    try:
        report = run_sync(
            args.url,
            rate=args.rate,
            duration_s=args.duration,
            body=args.body.read_bytes(),
            headers={k.strip(): v.strip() for k, v in headers.items()},
            max_connections=args.max_connections,
            timeout_s=args.timeout,
            max_requests=args.max_requests,
        )
    except RefusedTargetError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(json.dumps(asdict(report), indent=2) if args.json else report.summary())
    return 0 if report.kept_up else 1


if __name__ == "__main__":
    sys.exit(main())
