"""Memory and event-loop time of one hostile JSON body: peak RSS growth, and health latency meanwhile.

    python -m loadtests.hostile_body [--mib 8]

Sends bodies of tiny JSON values in a field the model ignores (the cheapest way to make a parser build
millions of objects) to a gateway on 127.0.0.1, one at a time, while a thread asks ``/v2/health/live``
every few milliseconds. Prints the server's RSS before, its peak (``VmHWM``) after, and the health
checks' latency (p50, max) while the bodies were decoded. Bounded: a fixed number of bodies and probes.
"""

from __future__ import annotations

import argparse
import http.client
import sys
import threading
import time
from pathlib import Path

import numpy as np

from loadtests.bench import gateway
from loadtests.models import repository_with


def _rss_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def hostile(mib: float) -> bytes:
    good = '{"name": "input", "shape": [1, 32], "datatype": "FP32", "data": [' + ",".join(["0.5"] * 32) + "]}"
    head = '{"inputs": [' + good + '], "junk": ['
    count = int(mib * 1024 * 1024 - len(head) - 2) // 2
    return (head + ",".join(["0"] * count) + "]}").encode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=float, default=7.9, help="body size (the default JSON limit is 8 MiB)")
    parser.add_argument("--bodies", type=int, default=4)
    args = parser.parse_args()
    server = gateway("hostile", repository_with(("logreg",))).start()
    try:
        body = hostile(args.mib)
        before = _rss_mb(server.pid, "VmRSS")
        stop = threading.Event()
        latencies: list[float] = []

        def probe() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            for _ in range(20_000):  # bounded; ends sooner when the bodies are done
                if stop.is_set():
                    break
                start = time.perf_counter()
                conn.request("GET", "/v2/health/live")
                conn.getresponse().read()
                latencies.append(time.perf_counter() - start)
                time.sleep(0.005)  # pacing of the probe itself, not synchronisation
            conn.close()

        thread = threading.Thread(target=probe)
        thread.start()
        statuses = []
        for _ in range(args.bodies):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            conn.request(
                "POST", "/v2/models/logreg/infer", body=body, headers={"content-type": "application/json"}
            )
            statuses.append(conn.getresponse().status)
            conn.close()
        stop.set()
        thread.join(timeout=30)
        peak = _rss_mb(server.pid, "VmHWM")
        # The decoding worker processes (sluice.server.http.decoding) hold the parse's Python objects.
        children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
        workers = [_rss_mb(int(pid), "VmHWM") for pid in children]
        lat = np.array(latencies) * 1e3
        print(
            f"{args.bodies} bodies of {len(body) / 2**20:.1f} MiB (statuses {sorted(set(statuses))}): RSS "
            f"{before:.0f} MB before, peak {peak:.0f} MB (+{peak - before:.0f} MB, "
            f"{(peak - before) / (len(body) / 2**20):.1f}x the body); decoding workers' peak RSS "
            f"{', '.join(f'{w:.0f}' for w in workers) or 'none'} MB; health while decoding: "
            f"{len(lat)} probes, p50 {np.percentile(lat, 50):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms, "
            f"max {lat.max():.1f} ms"
        )
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
