"""Run the performance scenarios P1-P7 of ``shared/design/performance.md`` and write ``docs/benchmarks.md``.

Every target is a ratio of two sides measured in the same run, alternating (A, B, A, B, ...; at least two
rounds each) and taking each side's median, because absolute figures do not travel between runs on a
shared 2-core machine. Beside each scenario go the physical limits: onnxruntime run in this process on
the same batch (rows/s) and the raw ASGI floor (req/s).

    python -m loadtests.bench --all            # everything, under 10 minutes, writes docs/benchmarks.md
    python -m loadtests.bench --only P1,P3     # a subset (the doc is written with just those)
    python -m loadtests.bench --all --quick    # a short smoke run (2 s points; not for the record)

Servers run as subprocesses on 127.0.0.1 and free ports, readiness read from uvicorn's log line, stopped
with SIGTERM. Loads: ``wrk`` (closed loop, one thread) and ``loadtests.openloop`` (open loop).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np

from loadtests import ROOT, WORK_DIR, models, openloop, wrk
from loadtests import mlserver as mls
from loadtests.servers import Server, ServerError, free_port, request

DOC = ROOT / "docs" / "benchmarks.md"
ALL = ("P1", "P2", "P3", "P4", "P5", "P6", "P7")
P4_ROWS = 1000


@dataclass
class Plan:
    """How long each point runs and how many alternating rounds each scenario takes."""

    duration_s: float = 6.0
    warmup_s: float = 2.0
    rounds: int = 3
    open_loop_s: float = 8.0


@dataclass
class Side:
    """One side of a comparison: a label, the figures per round, and notes (settings, execution)."""

    label: str
    rounds: list[wrk.WrkResult] = field(default_factory=list)
    notes: str = ""

    def median(self, attr: str) -> float:
        return float(statistics.median(getattr(r, attr) for r in self.rounds))

    @property
    def errors(self) -> int:
        return sum(r.error_count for r in self.rounds)


@dataclass
class Result:
    """One target's outcome, ready for the table."""

    id: str
    title: str
    target: str
    lines: list[str] = field(default_factory=list)
    verdict: str = ""
    summary: str = ""


# ----- bodies and in-process limits ---------------------------------------------------------------


def _rows(n: int) -> np.ndarray:
    x, _ = models.dataset()
    return np.ascontiguousarray(x[:n])


def _json_body(rows: np.ndarray, name: str = "input") -> bytes:
    doc = {
        "inputs": [
            {"name": name, "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}
        ]
    }
    return json.dumps(doc).encode()


def _binary_body(rows: np.ndarray, name: str = "input") -> tuple[bytes, dict[str, str]]:
    raw = rows.astype("<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "shape": list(rows.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header)),
    }
    return header + raw, headers


def _write(name: str, data: bytes) -> Path:
    path = WORK_DIR / "bodies" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def ort_limit(model: str, rows: int, budget_s: float = 1.0) -> tuple[float, float]:
    """onnxruntime in this process on ``rows`` rows, as the gateway configures it: (rows/s, us per call)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(
        str(models.model_path(model)), sess_options=options, providers=["CPUExecutionProvider"]
    )
    feed = {session.get_inputs()[0].name: _rows(rows)}
    for _ in range(3):
        session.run(None, feed)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < budget_s and calls < 200_000:
        session.run(None, feed)
        calls += 1
    elapsed = time.perf_counter() - start
    return rows * calls / elapsed, elapsed / calls * 1e6


# ----- servers --------------------------------------------------------------------------------------


def gateway(name: str, repository: Path, env: dict[str, str] | None = None, model: str = "logreg") -> Server:
    port = free_port()
    command = [sys.executable, "-m", "sluice.server.cli", "serve", "--repository", str(repository)]
    # info, not warning: uvicorn's readiness line is an info record. The access log stays off (default).
    command += ["--port", str(port), "--log-level", "info"]
    return Server(name, command, port, env=env, ready_path=f"/v2/models/{model}/ready")


def floor_server() -> Server:
    port = free_port()
    command = [sys.executable, "-m", "loadtests.floor", "--port", str(port), "--log-level", "info"]
    return Server("floor", command, port)


class Servers:
    """Servers started on first use within one run, shared by the scenarios, stopped at the end."""

    def __init__(self) -> None:
        self._running: dict[str, Server] = {}

    def get(self, key: str, make: Callable[[], Server]) -> Server:
        if key not in self._running:
            print(f"  starting {key}", file=sys.stderr, flush=True)
            self._running[key] = make().start()
        return self._running[key]

    def stop(self, key: str) -> None:
        server = self._running.pop(key, None)
        if server is not None:
            server.stop()

    def stop_all(self) -> None:
        for key in list(self._running):
            self.stop(key)


# ----- measuring ------------------------------------------------------------------------------------


@dataclass
class Target:
    """What one side of a closed-loop comparison POSTs, and where."""

    server: Server
    path: str
    body: Path
    headers: dict[str, str] = field(default_factory=dict)

    def check(self) -> None:
        """One request first: a side answering errors would otherwise be measured as fast."""
        status, body = request(self.server.port, "POST", self.path, self.body.read_bytes(), self.headers)
        if status != 200:
            raise ServerError(f"{self.server.name} {self.path} answered {status}: {body[:300]!r}")

    def load(self, connections: int, duration_s: float) -> wrk.WrkResult:
        return wrk.run(
            self.server.url(self.path),
            self.body,
            connections=connections,
            duration_s=duration_s,
            headers=self.headers,
        )


def alternate(sides: dict[str, Target], connections: int, plan: Plan) -> dict[str, Side]:
    """Warm each side up, then A, B, A, B ... for ``plan.rounds`` rounds at ``connections``."""
    out = {label: Side(label) for label in sides}
    for target in sides.values():
        target.check()
        target.load(connections, plan.warmup_s)
    for i in range(plan.rounds):
        for label, target in sides.items():
            result = target.load(connections, plan.duration_s)
            out[label].rounds.append(result)
            print(
                f"    round {i + 1} {label} c={connections}: {result.rps:,.0f} req/s "
                f"p50 {result.p50_ms:.2f} p99 {result.p99_ms:.2f} ms errors {result.errors or 0}",
                file=sys.stderr,
                flush=True,
            )
    return out


def _side_rows(sides: dict[str, Side], rows_per_request: int = 1) -> list[str]:
    lines = [
        "| side | req/s (median) | rows/s | p50 ms | p99 ms | errors | req/s each round | notes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for side in sides.values():
        rps = side.median("rps")
        each = ", ".join(f"{r.rps:,.0f}" for r in side.rounds)
        lines.append(
            f"| {side.label} | {rps:,.0f} | {rps * rows_per_request:,.0f} | {side.median('p50_ms'):.2f} | "
            f"{side.median('p99_ms'):.2f} | {side.errors} | {each} | {side.notes} |"
        )
    return lines


def _execution(server: Server, model: str) -> str:
    status, body = request(server.port, "GET", f"/v2/models/{model}/config")
    if status != 200:
        return f"config answered {status}"
    config = json.loads(body)
    execution = config.get("parameters", {}).get("sluice_execution", {}).get("string_value", "?")
    batching = config.get("dynamic_batching")
    return f"execution {execution}" + (f", dynamic_batching {json.dumps(batching)}" if batching else "")


def _verdict(met: bool, how: str) -> str:
    return f"**{'met' if met else 'missed'}** ({how})"


# ----- scenarios ------------------------------------------------------------------------------------


class Bench:
    """The scenarios, sharing servers, bodies and the floor's figure within one run."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.servers = Servers()
        self.floor_rps: float | None = None
        self.gateway_rps: float | None = None
        self.repo_logreg = models.repository_with(("logreg",))
        self.single = _write("logreg-1x32.json", _json_body(_rows(1)))

    def logreg_gateway(self) -> Server:
        """The full gateway of P1: metrics, monitoring, and routing from a rollouts file (every request is
        routed by the weights, as a model under a split is)."""
        rollouts = WORK_DIR / "rollouts-logreg.yaml"
        rollouts.write_text("models:\n  logreg:\n    traffic: {weights: {1: 100}}\n")
        env = {"SLUICE_ROLLOUT_FILE": str(rollouts), "SLUICE_STATE_DIR": str(WORK_DIR / "state-logreg")}
        return self.servers.get("sluice logreg", lambda: gateway("sluice logreg", self.repo_logreg, env=env))

    def floor(self) -> Server:
        return self.servers.get("floor", floor_server)

    def limits_line(self, model: str, batches: tuple[int, ...]) -> str:
        parts = []
        for rows in batches:
            rows_s, us = ort_limit(model, rows)
            parts.append(
                f"onnxruntime in-process `{model}` batch {rows}: {rows_s:,.0f} rows/s ({us:,.1f} us/call)"
            )
        floor = (
            f"{self.floor_rps:,.0f} req/s (c = 64, this run)"
            if self.floor_rps
            else "not measured in this run"
        )
        return "Limits: " + "; ".join(parts) + f"; raw ASGI floor: {floor}."

    def p1(self) -> Result:
        result = Result("P1", "Full gateway vs the raw ASGI floor, `logreg`, single-row v2 JSON", ">= 0.60")
        path = "/v2/models/logreg/infer"
        sides = {
            "raw ASGI floor (uvicorn + httptools + uvloop, orjson echo)": Target(
                self.floor(), "/", self.single
            ),
            "sluice gateway": Target(self.logreg_gateway(), path, self.single),
        }
        for connections in (64, 8):
            measured = alternate(sides, connections, self.plan)
            floor_side, gw_side = measured.values()
            ratio = gw_side.median("rps") / floor_side.median("rps")
            result.lines += [f"**c = {connections}**", "", *_side_rows(measured), ""]
            result.lines.append(f"Ratio gateway / floor req/s at c = {connections}: **{ratio:.2f}**")
            result.lines.append("")
            if connections == 64:
                self.floor_rps = floor_side.median("rps")
                self.gateway_rps = gw_side.median("rps")
                result.verdict = _verdict(ratio >= 0.60, f"{ratio:.2f} of the floor")
                result.summary = f"{gw_side.median('rps'):,.0f} vs {floor_side.median('rps'):,.0f} req/s"
        result.lines.append(self.limits_line("logreg", (1,)))
        result.lines.append("")
        result.lines.append(
            "The gateway side is the full gateway: metrics, drift monitoring (defaults) and rollout routing "
            "(a rollouts file splitting `logreg` by weights, so every request goes through the router)."
        )
        return result

    def p2(self) -> Result:
        result = Result(
            "P2", "sluice vs MLServer 1.7.1 + mlserver-sklearn, `logreg`, c = 64", ">= 10x req/s, p99 <= 1/20"
        )
        try:
            mls.install()
            found = mls.versions()
            port = free_port()
            root = mls.prepare(port, free_port(), free_port())
            server = self.servers.get(
                "mlserver",
                lambda: Server(
                    "mlserver",
                    mls.command(root),
                    port,
                    ready_path="/v2/models/logreg/ready",
                    start_timeout_s=240,
                ),
            )
        except (mls.MLServerUnavailableError, ServerError, subprocess.SubprocessError, OSError) as exc:
            result.verdict = f"not measured ({exc})"
            result.lines.append(f"MLServer: not measured ({exc}).")
            return result
        body = _write("mlserver-1x32.json", _json_body(_rows(1), mls.INPUT_NAME))
        sides = {
            "sluice gateway": Target(self.logreg_gateway(), "/v2/models/logreg/infer", self.single),
            f"MLServer {found['mlserver']} (one process, parallel_workers 0)": Target(
                server, "/v2/models/logreg/infer", body
            ),
        }
        measured = alternate(sides, 64, self.plan)
        self.servers.stop("mlserver")
        sl, ml = measured.values()
        rps_ratio = sl.median("rps") / ml.median("rps")
        p99_ratio = sl.median("p99_ms") / ml.median("p99_ms")
        result.lines += [*_side_rows(measured), ""]
        result.lines.append(
            f"Ratios: req/s sluice / MLServer **{rps_ratio:.1f}x** (target >= 10x); p99 sluice / MLServer "
            f"**{p99_ratio:.3f}** (target <= 0.05, i.e. 1/{1 / p99_ratio:.0f})."
        )
        result.lines.append("")
        result.lines.append(
            f"MLServer {found['mlserver']}, mlserver-sklearn {found['mlserver-sklearn']}, scikit-learn "
            f"{found['scikit-learn']} in `loadtests/.work/mlserver-venv`; the same pipeline fitted there "
            "(same data and seed) and served from joblib; MLServer's default output (`predict`), input "
            f"named `{mls.INPUT_NAME}`, the same 1 x 32 FP32 v2 JSON body otherwise."
        )
        result.lines.append("")
        result.lines.append(self.limits_line("logreg", (1,)))
        met = rps_ratio >= 10 and p99_ratio <= 0.05
        result.verdict = _verdict(met, f"{rps_ratio:.1f}x req/s, p99 1/{1 / p99_ratio:.0f}")
        result.summary = f"{sl.median('rps'):,.0f} vs {ml.median('rps'):,.0f} req/s"
        return result

    def p3(self) -> Result:
        result = Result(
            "P3", "Dynamic batching on `bigmlp`, single-row v2 JSON, c = 64", ">= 2.5x req/s, p99 no worse"
        )
        repo = models.repository_with(("bigmlp",))
        on = self.servers.get("bigmlp on", lambda: gateway("sluice bigmlp batching on", repo, model="bigmlp"))
        off = self.servers.get(
            "bigmlp off",
            lambda: gateway(
                "sluice bigmlp batching off", repo, env={"SLUICE_BATCHING__ENABLED": "false"}, model="bigmlp"
            ),
        )
        path = "/v2/models/bigmlp/infer"
        sides = {
            "batching on (defaults)": Target(on, path, self.single),
            "batching off (SLUICE_BATCHING__ENABLED=false)": Target(off, path, self.single),
        }
        notes = {label: _execution(t.server, "bigmlp") for label, t in sides.items()}
        measured = alternate(sides, 64, self.plan)
        for label, side in measured.items():
            side.notes = notes[label]
        self.servers.stop("bigmlp on")
        self.servers.stop("bigmlp off")
        b_on, b_off = measured.values()
        ratio = b_on.median("rps") / b_off.median("rps")
        p99_ok = b_on.median("p99_ms") <= b_off.median("p99_ms")
        result.lines += [*_side_rows(measured), ""]
        result.lines.append(
            f"Ratio on / off req/s: **{ratio:.2f}x**; p99 on {b_on.median('p99_ms'):.1f} ms vs off "
            f"{b_off.median('p99_ms'):.1f} ms."
        )
        result.lines.append("")
        result.lines.append(
            "Knobs: the defaults of `BatchingSettings` (max_batch_size 64, max_queue_delay_us 0, preferred "
            "sizes from the load-time profile, instances 1, intra_op_threads 1); off is the same server with "
            "`SLUICE_BATCHING__ENABLED=false`. The notes column is what each server's config endpoint says."
        )
        result.lines.append("")
        result.lines.append(self.limits_line("bigmlp", (1, 8, 64)))
        result.verdict = _verdict(
            ratio >= 2.5 and p99_ok, f"{ratio:.2f}x, p99 {'no worse' if p99_ok else 'worse'}"
        )
        result.summary = f"{b_on.median('rps'):,.0f} vs {b_off.median('rps'):,.0f} req/s"
        return result

    def p4(self) -> Result:
        result = Result(
            "P4", f"Binary tensors vs JSON, `logreg`, {P4_ROWS} x 32 per request, c = 8", ">= 5x rows/s"
        )
        rows = _rows(P4_ROWS)
        json_body = _write("logreg-1000x32.json", _json_body(rows))
        binary, headers = _binary_body(rows)
        binary_body = _write("logreg-1000x32.bin", binary)
        # The default max_queue_size (4096 rows) holds only four 1,000-row requests: at c = 8 half of them
        # would be shed with 503. The codec is what P4 measures, so this server queues more.
        queue = {"SLUICE_BATCHING__MAX_QUEUE_SIZE": "65536"}
        server = self.servers.get(
            "p4", lambda: gateway("sluice logreg, queue 65536 rows", self.repo_logreg, queue)
        )
        path = "/v2/models/logreg/infer"
        sides = {
            "binary tensor extension (in and out)": Target(server, path, binary_body, headers),
            "v2 JSON": Target(server, path, json_body),
        }
        measured = alternate(sides, 8, self.plan)
        binary_side, json_side = measured.values()
        ratio = binary_side.median("rps") / json_side.median("rps")
        result.lines += [*_side_rows(measured, P4_ROWS), ""]
        result.lines.append(
            f"Ratio binary / JSON rows/s: **{ratio:.2f}x**. Bodies: JSON {json_body.stat().st_size:,} bytes, "
            f"binary {binary_body.stat().st_size:,} bytes."
        )
        result.lines.append("")
        result.lines.append(
            "Server: `logreg` with `SLUICE_BATCHING__MAX_QUEUE_SIZE=65536`. With the default 4,096 rows, "
            "only four 1,000-row requests can wait, and at c = 8 about half the requests are answered 503 "
            "(queue full) when the bodies are binary (measured while writing this benchmark)."
        )
        result.lines.append("")
        result.lines.append(self.limits_line("logreg", (P4_ROWS,)))
        self.servers.stop("p4")
        result.verdict = _verdict(ratio >= 5, f"{ratio:.2f}x")
        result.summary = (
            f"{binary_side.median('rps') * P4_ROWS:,.0f} vs {json_side.median('rps') * P4_ROWS:,.0f} rows/s"
        )
        return result

    def p5(self) -> Result:
        from sluice.server.settings import Settings

        result = Result("P5", "Monitoring on vs off", ">= 0.90")
        if "monitoring" not in Settings.model_fields:
            result.verdict = "skipped: not yet built (the settings have no `monitoring` field)"
            result.lines.append("Not yet built: `Settings` has no `monitoring` field to turn off.")
            return result
        repo = self.repo_logreg
        on = self.servers.get("monitoring on", lambda: gateway("sluice monitoring on", repo))
        off = self.servers.get(
            "monitoring off",
            lambda: gateway("sluice monitoring off", repo, env={"SLUICE_MONITORING__ENABLED": "false"}),
        )
        path = "/v2/models/logreg/infer"
        sides = {
            "monitoring on": Target(on, path, self.single),
            "monitoring off": Target(off, path, self.single),
        }
        measured = alternate(sides, 64, self.plan)
        self.servers.stop("monitoring on")
        self.servers.stop("monitoring off")
        m_on, m_off = measured.values()
        ratio = m_on.median("rps") / m_off.median("rps")
        result.lines += [*_side_rows(measured), "", f"Ratio on / off: **{ratio:.2f}**", ""]
        result.lines.append(self.limits_line("logreg", (1,)))
        result.verdict = _verdict(ratio >= 0.90, f"{ratio:.2f}")
        result.summary = f"{m_on.median('rps'):,.0f} vs {m_off.median('rps'):,.0f} req/s"
        return result

    def p6(self) -> Result:
        result = Result("P6", "`--workers 2` vs 1, `logreg`, c = 64", "reported")
        help_text = subprocess.run(
            [sys.executable, "-m", "sluice.server.cli", "serve", "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        if "--workers" not in help_text:
            result.verdict = "skipped: not yet built (`sluice serve` has no `--workers`)"
            result.lines.append("Not yet built: `sluice serve --help` lists no `--workers`.")
            return result
        repo = self.repo_logreg

        def with_workers(n: int) -> Server:
            server = gateway(f"sluice workers {n}", repo)
            server.command += ["--workers", str(n)]
            return server

        two = self.servers.get("workers 2", lambda: with_workers(2))
        one = self.servers.get("workers 1", lambda: with_workers(1))
        path = "/v2/models/logreg/infer"
        sides = {"--workers 2": Target(two, path, self.single), "--workers 1": Target(one, path, self.single)}
        measured = alternate(sides, 64, self.plan)
        self.servers.stop("workers 2")
        self.servers.stop("workers 1")
        w2, w1 = measured.values()
        ratio = w2.median("rps") / w1.median("rps")
        result.lines += [*_side_rows(measured), "", f"Scaling 2 / 1 workers: **{ratio:.2f}x**", ""]
        result.verdict = f"reported: {ratio:.2f}x (the load generator shares the same 2 cores)"
        return result

    def p7(self) -> Result:
        result = Result("P7", "Open loop at 50 % of the gateway's max throughput, `logreg`", "p99 <= 3x p50")
        server = self.logreg_gateway()
        path = "/v2/models/logreg/infer"
        if self.gateway_rps is None:
            self.gateway_rps = Target(server, path, self.single).load(64, self.plan.duration_s).rps
        rate = 0.5 * self.gateway_rps
        floor = self.floor()
        body = self.single.read_bytes()

        def point(srv: Server, url_path: str, seconds: float) -> openloop.Report:
            return openloop.run_sync(
                srv.url(url_path), rate=rate, duration_s=seconds, body=body, timeout_s=10.0
            )

        point(server, path, self.plan.warmup_s)
        point(floor, "/", self.plan.warmup_s)
        gw_reports: list[openloop.Report] = []
        floor_reports: list[openloop.Report] = []
        for i in range(self.plan.rounds):
            for reports, srv, url_path, label in (
                (gw_reports, server, path, "gateway"),
                (floor_reports, floor, "/", "floor"),
            ):
                report = point(srv, url_path, self.plan.open_loop_s)
                reports.append(report)
                print(f"    round {i + 1} {label}: {report.summary()}", file=sys.stderr, flush=True)
        result.lines += [
            f"Offered rate: **{rate:,.0f} req/s** (50 % of the gateway's c = 64 median in this run, "
            f"{self.gateway_rps:,.0f} req/s); {self.plan.open_loop_s:g} s per round after a "
            f"{self.plan.warmup_s:g} s warm-up; latency from each request's scheduled send time.",
            "",
            "| side | round | achieved req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | p99 / p50 | errors | "
            "send lag p99 ms | generator kept up |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |",
        ]
        for label, reports in (("sluice gateway", gw_reports), ("raw ASGI floor (same rate)", floor_reports)):
            for i, r in enumerate(reports, 1):
                lat = r.latency_ms
                ratio = lat["p99"] / lat["p50"] if lat else float("nan")
                cells = [label, str(i), f"{r.achieved_rps:,.0f}"]
                cells += [f"{lat.get(k, 0):.2f}" for k in ("p50", "p90", "p99", "p99.9")]
                cells += [f"{ratio:.2f}", str(r.errors or "none"), f"{r.send_lag_ms.get('p99', 0):.2f}"]
                cells.append("yes" if r.kept_up else "no")
                result.lines.append("| " + " | ".join(cells) + " |")
        ratios = [r.latency_ms["p99"] / r.latency_ms["p50"] for r in gw_reports if r.latency_ms]
        floor_ratios = [r.latency_ms["p99"] / r.latency_ms["p50"] for r in floor_reports if r.latency_ms]
        ratio = statistics.median(ratios) if ratios else float("nan")
        floor_ratio = statistics.median(floor_ratios) if floor_ratios else float("nan")
        kept_up = all(r.kept_up for r in gw_reports + floor_reports)
        result.lines += [
            "",
            f"Median p99 / p50: gateway **{ratio:.2f}**, floor at the same rate {floor_ratio:.2f}. "
            "The floor's row shows what the generator, the loopback and this machine's scheduling jitter add "
            "by themselves.",
        ]
        if not kept_up:
            result.lines.append(
                "The generator did not keep up in every round (send lag p99 over 5 ms, or requests not "
                "sent): those rounds measure the client and the machine as much as the server."
            )
        result.verdict = _verdict(ratio <= 3, f"p99 / p50 = {ratio:.2f}")
        med = lambda key: statistics.median(r.latency_ms.get(key, float("nan")) for r in gw_reports)  # noqa: E731
        result.summary = f"p50 {med('p50'):.2f} ms, p99 {med('p99'):.2f} ms at {rate:,.0f} req/s"
        return result

    def run(self, ids: list[str]) -> list[Result]:
        results = []
        try:
            for scenario_id in ids:
                print(f"{scenario_id}", file=sys.stderr, flush=True)
                started = time.monotonic()
                try:
                    results.append(getattr(self, scenario_id.lower())())
                except (ServerError, RuntimeError, subprocess.SubprocessError) as exc:
                    failed = Result(scenario_id, scenario_id, "", verdict=f"not measured ({exc})")
                    results.append(failed)
                print(f"  {scenario_id} took {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
        finally:
            self.servers.stop_all()
        return results


# ----- the document ---------------------------------------------------------------------------------


def _version(dist: str) -> str:
    with contextlib.suppress(metadata.PackageNotFoundError):
        return metadata.version(dist)
    return "not installed"


def machine() -> list[str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[:1]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "server"], capture_output=True, text=True, cwd=ROOT
    )
    versions = ", ".join(
        f"{d} {_version(d)}"
        for d in ("onnxruntime", "uvicorn", "starlette", "httptools", "uvloop", "orjson", "numpy")
    )
    return [
        f"- machine: {os.cpu_count()} cores (`nproc`), CPU `{cpu}`, {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}; {versions}",
        f"- wrk: {(wrk_version or ['?'])[0].strip()}",
        f"- gateway code: commit {commit.stdout.strip() or '?'}"
        + (" with uncommitted changes under server/" if dirty.stdout.strip() else ""),
    ]


def write_doc(results: list[Result], command: str, plan: Plan, elapsed_s: float, path: Path = DOC) -> None:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `{command}` (do not edit by hand: rerun the command). Targets and method: "
        "`shared/design/performance.md`. Every figure below comes from one run on a shared, noisy 2-core "
        "machine; only the ratios between sides measured in the same run, alternating, mean anything.",
        "",
        f"- date: {now}; whole run {elapsed_s / 60:.1f} min",
        *machine(),
        f"- method: closed loop with wrk (1 thread, keep-alive, {plan.duration_s:g} s per point after a "
        f"{plan.warmup_s:g} s warm-up), sides alternated for {plan.rounds} rounds, median per side; "
        "open loop with `loadtests.openloop`; every server one process on 127.0.0.1; the load generator "
        "shares the machine's cores with the server",
        "",
        "## Summary",
        "",
        "| id | what | figures | target | result |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(f"| {r.id} | {r.title} | {r.summary} | {r.target} | {r.verdict} |")
    for r in results:
        lines += ["", f"## {r.id}: {r.title}", "", f"Target: {r.target or 'n/a'}. Result: {r.verdict}", ""]
        lines += r.lines
    path.write_text("\n".join(lines).rstrip() + "\n")


@contextlib.contextmanager
def _timer() -> Iterator[list[float]]:
    box = [time.monotonic()]
    yield box
    box[0] = time.monotonic() - box[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="run P1 to P7")
    which.add_argument("--only", help="comma-separated ids, e.g. P1,P3")
    parser.add_argument("--quick", action="store_true", help="short points: a smoke run, not for the record")
    parser.add_argument("--output", type=Path, default=DOC, help="where to write the markdown")
    args = parser.parse_args()
    ids = list(ALL) if args.all else [s.strip().upper() for s in args.only.split(",") if s.strip()]
    unknown = [i for i in ids if i not in ALL]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    plan = Plan(duration_s=2.0, warmup_s=1.0, rounds=2, open_loop_s=3.0) if args.quick else Plan()
    wrk.wrk_path()
    command = "python -m loadtests.bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    print("building models (cached in loadtests/.work/models)", file=sys.stderr, flush=True)
    models.build(progress=lambda message: print(f"  {message}", file=sys.stderr, flush=True))
    with _timer() as elapsed:
        results = Bench(plan).run(ids)
    write_doc(results, command, plan, elapsed[0], args.output)
    for r in results:
        print(f"{r.id}: {r.summary} -> {r.verdict}")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
