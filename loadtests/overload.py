"""Overload: what one gateway process does at several times its capacity, admission by time on and off.

    python -m loadtests.overload [--duration 10] [--connections 2000] [--write]

For each side (``max_queue_wait_ms`` 50: admission by time; ``null``, the default: by queued rows
only), in one run on one machine:

1. capacity: wrk, 64 connections, closed loop (1-row v2 JSON to ``logreg``), successes per second;
2. overload: a wrk flood of ``--connections`` keep-alive connections (each sends again as soon as it has
   an answer, so fast 503s make it offer many times the capacity), and beside it an open-loop probe at a
   small fixed rate that records what a client sees, by status: p50/p99 of successes and of 503s;
3. the server's peak RSS (``VmHWM``) after the run.

Goodput is the flood's successes per second over the capacity measured on the same side just before.
Every loop is bounded (wrk's ``-d`` and request cap; the probe's count and hard stop), 127.0.0.1 only.
``--write`` replaces the overload section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loadtests import ROOT, WORK_DIR
from loadtests.bench import gateway
from loadtests.models import repository_with
from loadtests.openloop import build_request, parse_target, percentiles
from loadtests.wrk import run as wrk

DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- overload:begin -->", "<!-- overload:end -->"


@dataclass
class Side:
    name: str
    capacity_rps: float
    flood_ok_rps: float
    flood_shed_share: float
    flood_requests_rps: float
    ok_p50_ms: float
    ok_p99_ms: float
    shed_p50_ms: float
    shed_p99_ms: float
    probe_ok: int
    probe_shed: int
    probe_other: int
    peak_rss_mb: float
    unloaded_p99_ms: float


def _body() -> Path:
    rng = np.random.default_rng(0)
    row = rng.random(32, dtype=np.float32).tolist()
    body = {"inputs": [{"name": "input", "shape": [1, 32], "datatype": "FP32", "data": row}]}
    path = WORK_DIR / "overload-body.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(json.dumps(body).encode())
    return path


async def _probe(url: str, body: bytes, rate: float, seconds: float) -> dict[int, list[float]]:
    """Open loop at ``rate``/s on its own connections: latency per status, from each scheduled time."""
    host, port, path = parse_target(url)
    payload = build_request(host, port, path, body, {"Content-Type": "application/json"})
    by_status: dict[int, list[float]] = {}
    count = int(rate * seconds)
    start = time.perf_counter()

    async def one(i: int) -> None:
        due = start + i / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
            writer.write(payload)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            status = int(head.split(b" ", 2)[1])
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                0,
            )
            await asyncio.wait_for(reader.readexactly(length), 10)
            writer.close()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            status = 0  # refused, reset or timed out
        by_status.setdefault(status, []).append(time.perf_counter() - due)

    await asyncio.gather(*(one(i) for i in range(count)))
    return by_status


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(
    name: str,
    env: dict[str, str],
    body: Path,
    *,
    connections: int,
    duration_s: float,
    overload: float,
    model: str,
) -> Side:
    repository = repository_with((model,))
    server = gateway(name, repository, env=env, model=model).start()
    try:
        url = server.url(f"/v2/models/{model}/infer")
        wrk(url, body, connections=64, duration_s=2)  # warm-up
        capacity = wrk(url, body, connections=64, duration_s=duration_s)
        unloaded = asyncio.run(_probe(url, body.read_bytes(), rate=100, seconds=3))
        probe_rate = max(20.0, capacity.rps * 0.02)
        probed: dict[int, list[float]] = {}

        def run_probe() -> None:
            probed.update(asyncio.run(_probe(url, body.read_bytes(), probe_rate, duration_s - 1)))

        thread = threading.Thread(target=run_probe)
        thread.start()
        # Think time so that the flood offers ``overload`` x capacity: each connection sends at most every
        # ``connections / (overload x capacity)`` seconds (a shed client waits too, as a client honouring
        # Retry-After loosely would); 0 would make fast 503s an unbounded closed loop.
        think_ms = 1e3 * connections / (overload * capacity.rps)
        flood = wrk(
            url, body, connections=connections, duration_s=duration_s, timeout_s=10, think_ms=think_ms
        )
        thread.join(timeout=duration_s + 30)
        ok, shed = probed.get(200, []), probed.get(503, [])
        p_ok, p_shed = percentiles(ok) if ok else {}, percentiles(shed) if shed else {}
        return Side(
            name=name,
            capacity_rps=capacity.rps,
            flood_ok_rps=flood.rps,
            flood_shed_share=flood.errors.get("status", 0) / max(flood.requests, 1),
            flood_requests_rps=flood.requests / flood.duration_s,
            ok_p50_ms=p_ok.get("p50", float("nan")),
            ok_p99_ms=p_ok.get("p99", float("nan")),
            shed_p50_ms=p_shed.get("p50", float("nan")),
            shed_p99_ms=p_shed.get("p99", float("nan")),
            probe_ok=len(ok),
            probe_shed=len(shed),
            probe_other=sum(len(v) for k, v in probed.items() if k not in (200, 503)),
            peak_rss_mb=_peak_rss_mb(server.pid),
            unloaded_p99_ms=percentiles(unloaded.get(200, [float("nan")]))["p99"],
        )
    finally:
        server.stop()


def table(sides: list[Side], command: str, connections: int, overload: float, model: str) -> str:
    rows = [
        f"Command: `{command}` ({time.strftime('%Y-%m-%d')}). One gateway process, `{model}` (32 features), "
        f"1-row v2 JSON. Flood: wrk, {connections} keep-alive connections, each pausing between requests so "
        f"that together they offer {overload:g}x the capacity measured just before; probe: open loop at 2 % "
        "of capacity on fresh connections, latency from each request's scheduled time.",
        "",
        "| admission | capacity req/s | flood offered req/s | goodput req/s | goodput / capacity "
        "| shed share | probe p50 / p99 ok (ms) | probe p50 / p99 503 (ms) | unloaded p99 (ms) "
        "| probe ok / 503 / other | peak RSS MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in sides:
        rows.append(
            f"| {s.name} | {s.capacity_rps:,.0f} | {s.flood_requests_rps:,.0f} | {s.flood_ok_rps:,.0f} "
            f"| {s.flood_ok_rps / s.capacity_rps:.2f} | {s.flood_shed_share:.0%} "
            f"| {s.ok_p50_ms:.1f} / {s.ok_p99_ms:.1f} | {s.shed_p50_ms:.1f} / {s.shed_p99_ms:.1f} "
            f"| {s.unloaded_p99_ms:.1f} | {s.probe_ok} / {s.probe_shed} / {s.probe_other} "
            f"| {s.peak_rss_mb:.0f} |"
        )
    return "\n".join(rows)


def write(text: str, path: Path = DOC) -> None:
    doc = path.read_text()
    section = f"{BEGIN}\n## Overload (admission control)\n\n{text}\n{END}"
    if BEGIN in doc:
        doc = doc[: doc.index(BEGIN)] + section + doc[doc.index(END) + len(END) :]
    else:
        doc = doc.rstrip() + "\n\n" + section + "\n"
    path.write_text(doc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--overload", type=float, default=6.0, help="offered load / measured capacity")
    parser.add_argument("--model", default="logreg", choices=("logreg", "forest", "bigmlp"))
    parser.add_argument(
        "--write", action="store_true", help="replace the overload section of docs/benchmarks.md"
    )
    args = parser.parse_args()
    body = _body()
    sides = []
    for name, env in (
        ("by time (max_queue_wait_ms 50)", {"SLUICE_BATCHING": '{"max_queue_wait_ms": 50}'}),
        ("by rows only (max_queue_wait_ms null)", {"SLUICE_BATCHING": '{"max_queue_wait_ms": null}'}),
    ):
        print(f"measuring: {name}", file=sys.stderr, flush=True)
        sides.append(
            measure(
                name,
                env,
                body,
                connections=args.connections,
                duration_s=args.duration,
                overload=args.overload,
                model=args.model,
            )
        )
    command = f"python -m loadtests.overload --model {args.model}" + (" --write" if args.write else "")
    text = table(sides, command, args.connections, args.overload, args.model)
    print(text)
    if args.write:
        write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
