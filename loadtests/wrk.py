"""Closed-loop load with Debian's ``wrk``: one thread, N keep-alive connections, a fixed POST body.

``post.lua`` (beside this file) sets the method, body and headers, stops the thread after a bounded
count of responses, and prints a JSON summary from wrk's ``done`` hook (requests, errors, p50/p90/p99/
p99.9 latency). wrk itself bounds the time (``-d``); a subprocess timeout backs it up. Only
``http://127.0.0.1`` URLs are accepted. Install wrk with ``apt-get install -y wrk``.

    python -m loadtests.wrk --url http://127.0.0.1:8000/v2/models/logreg/infer --body body.json -c 64
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from loadtests.openloop import parse_target

SCRIPT = Path(__file__).resolve().parent / "post.lua"
#: Far above anything this stack answers per second; a safety bound, not a measurement knob.
MAX_RPS_BOUND = 200_000


class WrkMissingError(RuntimeError):
    """``wrk`` is not on PATH."""


@dataclass
class WrkResult:
    """One wrk point: throughput and latency percentiles (milliseconds) at a fixed connection count."""

    connections: int
    duration_s: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    errors: dict[str, int]

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def wrk_path() -> str:
    """The wrk executable, or ``WrkMissingError`` saying how to install it."""
    found = shutil.which("wrk")
    if found is None:
        raise WrkMissingError("wrk is not installed: apt-get update && apt-get install -y wrk")
    return found


def run(
    url: str,
    body: Path,
    *,
    connections: int,
    duration_s: float,
    headers: dict[str, str] | None = None,
    timeout_s: float = 10.0,
    think_ms: float = 0.0,
) -> WrkResult:
    """One wrk run (one thread) against ``url``; the request POSTs the bytes of ``body``.

    ``think_ms``: each connection pauses this long before its next request (a client's think time).
    """
    parse_target(url)  # refuses anything but 127.0.0.1
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    max_requests = int(MAX_RPS_BOUND * duration_s)
    command = [
        wrk_path(),
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={max(1, round(timeout_s))}s",
        "-s",
        str(SCRIPT),
        url,
        "--",
        str(body),
        str(max_requests),
        *(f"{k}: {v}" for k, v in all_headers.items()),
    ]
    env = {**os.environ, "WRK_THINK_MS": str(int(think_ms))}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=duration_s + timeout_s + 30, env=env
    )
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout[-300:]}")
    data = json.loads(line.removeprefix("WRK_JSON "))
    lat = data["latency_us"]
    seconds = data["duration_us"] / 1e6
    errors = {k: int(v) for k, v in data["errors"].items() if v}
    return WrkResult(
        connections=connections,
        duration_s=seconds,
        requests=data["requests"],
        # Non-2xx answers count in wrk's requests; they are not throughput.
        rps=(data["requests"] - errors.get("status", 0)) / seconds,
        p50_ms=lat["p50"] / 1e3,
        p90_ms=lat["p90"] / 1e3,
        p99_ms=lat["p99"] / 1e3,
        p999_ms=lat["p999"] / 1e3,
        errors=errors,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="http://127.0.0.1:PORT/path (no other host)")
    parser.add_argument("--body", type=Path, required=True)
    parser.add_argument("-c", "--connections", type=int, default=64)
    parser.add_argument("-d", "--duration", type=float, default=6.0)
    parser.add_argument("--header", action="append", default=[], help="extra 'Name: value' header")
    args = parser.parse_args()
    headers = {k.strip(): v.strip() for k, v in (h.split(":", 1) for h in args.header)}
    result = run(args.url, args.body, connections=args.connections, duration_s=args.duration, headers=headers)
    print(json.dumps(asdict(result), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
