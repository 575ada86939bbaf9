"""Gates on figures from Prometheus: a fake Prometheus HTTP API on 127.0.0.1 answers the queries."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from sluice.converters.artifact.errors import ConfigError
from sluice.server.rollouts.gates import FAIL, INSUFFICIENT, PASS, Analyzer, GateWindow
from sluice.server.rollouts.prometheus import PrometheusFigures
from sluice.server.rollouts.spec import RolloutSpec, lint, parse_rollouts


class FakePrometheus:
    """Answers ``/api/v1/query`` from ``counts`` (version -> outcome -> n) and ``p99`` (version -> s)."""

    def __init__(self) -> None:
        self.counts: dict[int, dict[str, float]] = {}
        self.p99: dict[int, float] = {}
        self.status = 200
        self.error = ""
        self.queries: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = parse_qs(url.query)["query"][0]
                fake.queries.append(query)
                body: dict[str, Any]
                if fake.error:
                    body = {"status": "error", "errorType": "bad_data", "error": fake.error}
                elif query.startswith("histogram_quantile"):
                    result = [
                        {"metric": {"version": str(v)}, "value": [0, str(s)]} for v, s in fake.p99.items()
                    ]
                    body = {"status": "success", "data": {"resultType": "vector", "result": result}}
                else:
                    result = [
                        {"metric": {"version": str(v), "outcome": o}, "value": [0, str(n)]}
                        for v, outcomes in fake.counts.items()
                        for o, n in outcomes.items()
                    ]
                    body = {"status": "success", "data": {"resultType": "vector", "result": result}}
                data = json.dumps(body).encode()
                self.send_response(fake.status if not fake.error else 400)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake() -> Iterator[FakePrometheus]:
    server = FakePrometheus()
    yield server
    server.close()


def spec(url: str, **analysis: Any) -> RolloutSpec:
    body = {
        "models": {
            "clf": {
                "rollout": {
                    "stable": 1,
                    "candidate": 2,
                    "step_weights": [50],
                    "step_for": "1m",
                    "analysis": {
                        "interval": "10s",
                        "window": "1m",
                        "min_samples": 50,
                        "source": "prometheus",
                        "prometheus": {"url": url, "timeout": "2s"},
                        **analysis,
                    },
                    "gates": [
                        {"metric": "error_rate", "max": 0.05, "max_increase_over_stable": 0.02},
                        {"metric": "latency_p99_ms", "max": 200},
                        {"metric": "shadow_disagreement", "max": 0.1},
                    ],
                }
            }
        }
    }
    rollout = parse_rollouts(body).models["clf"].rollout
    assert rollout is not None
    return rollout


def evaluate(s: RolloutSpec, errors: list[str] | None = None) -> dict[str, Any]:
    figures = PrometheusFigures("clf", s, on_error=(errors if errors is not None else []).append)
    asyncio.run(figures.refresh())
    windows = {1: GateWindow(), 2: GateWindow()}
    for i in range(60):  # shadow comparisons stay in-process
        windows[2].compared(100.0, agree=i % 20 != 0)
    analyzer = Analyzer("clf", s, windows.__getitem__, figures=figures.stats)
    return {r.metric: r for r in analyzer(100.0)}


def test_healthy_figures_pass_and_queries_select_routed_traffic(fake: FakePrometheus) -> None:
    fake.counts = {1: {"ok": 990.4, "server_error": 10}, 2: {"ok": 296, "server_error": 4, "disconnected": 7}}
    fake.p99 = {1: 0.05, 2: 0.08}
    results = evaluate(spec(fake.url))
    error = results["error_rate"]
    assert (error.verdict, error.samples, error.source) == (PASS, 300, "prometheus")
    assert error.value == pytest.approx(4 / 300) and error.stable == pytest.approx(10 / 1000)
    latency = results["latency_p99_ms"]
    assert (latency.verdict, latency.samples, latency.value) == (PASS, 296, pytest.approx(80.0))
    shadow = results["shadow_disagreement"]
    assert (shadow.verdict, shadow.source, shadow.samples) == (PASS, "inprocess", 60)
    requests_q, p99_q = fake.queries
    assert 'model="clf"' in requests_q and 'version=~"1|2"' in requests_q
    assert 'reason=~"split|sticky|default"' in requests_q and "[60000ms]" in requests_q
    assert p99_q.startswith("histogram_quantile(0.99, sum by (version, le) (rate(")


def test_a_failing_candidate_fails_from_prometheus_figures(fake: FakePrometheus) -> None:
    fake.counts = {1: {"ok": 1000}, 2: {"ok": 240, "server_error": 50, "timeout": 5, "shed": 5}}
    fake.p99 = {1: 0.05, 2: 0.5}
    results = evaluate(spec(fake.url))
    error = results["error_rate"]
    assert (error.verdict, error.samples) == (FAIL, 300) and error.value == pytest.approx(0.2)
    assert results["latency_p99_ms"].verdict == FAIL


def test_too_little_traffic_is_insufficient(fake: FakePrometheus) -> None:
    fake.counts = {1: {"ok": 1000}, 2: {"ok": 20}}
    fake.p99 = {1: 0.05, 2: 0.05}
    results = evaluate(spec(fake.url))
    assert results["error_rate"].verdict == INSUFFICIENT
    assert results["error_rate"].detail == "20 of 50 candidate samples"


def test_prometheus_down_is_insufficient_and_counted() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    errors: list[str] = []
    results = evaluate(spec(url), errors)
    for metric in ("error_rate", "latency_p99_ms"):
        gate = results[metric]
        assert gate.verdict == INSUFFICIENT and "unreachable" in gate.detail, gate
        assert gate.detail.startswith("insufficient: prometheus: ")
    assert results["shadow_disagreement"].verdict == PASS  # in-process figures are unaffected
    assert len(errors) == 1 and "unreachable" in errors[0]


def test_a_prometheus_error_answer_is_insufficient_with_its_reason(fake: FakePrometheus) -> None:
    fake.error = "parse error at char 3"
    errors: list[str] = []
    results = evaluate(spec(fake.url), errors)
    gate = results["error_rate"]
    assert (
        gate.verdict == INSUFFICIENT and "parse error at char 3" in gate.detail and "HTTP 400" in gate.detail
    )


def test_a_malformed_answer_is_insufficient(fake: FakePrometheus) -> None:
    fake.counts = {2: {"ok": "NaN-ish"}}  # type: ignore[dict-item]
    results = evaluate(spec(fake.url))
    assert results["error_rate"].verdict == INSUFFICIENT


def test_no_refresh_yet_is_insufficient(fake: FakePrometheus) -> None:
    s = spec(fake.url)
    figures = PrometheusFigures("clf", s)
    analyzer = Analyzer("clf", s, lambda v: GateWindow(), figures=figures.stats)
    gate = analyzer(0.0)[0]
    assert gate.verdict == INSUFFICIENT and "no figures read yet" in gate.detail


def test_the_selector_is_added_to_every_query(fake: FakePrometheus) -> None:
    figures = PrometheusFigures(
        "clf", spec(fake.url, prometheus={"url": fake.url, "selector": 'job="sluice"'})
    )
    assert all(',job="sluice"' in q for q in figures.queries())


def lint_messages(analysis: dict[str, Any]) -> list[str]:
    body = {
        "models": {
            "clf": {"rollout": {"stable": 1, "candidate": 2, "step_weights": [50], "analysis": analysis}}
        }
    }
    try:
        parse_rollouts(body)
    except ConfigError as exc:
        return list(exc.details["problems"])
    return []


@pytest.mark.parametrize(
    ("analysis", "message"),
    [
        ({"source": "prometheus"}, "source prometheus needs prometheus: {url: http://...}"),
        ({"prometheus": {"url": "http://127.0.0.1:9090"}}, "prometheus: given but source is inprocess"),
        (
            {"source": "prometheus", "prometheus": {"url": "ftp://prom:9090"}},
            "is not an http(s) URL with a host",
        ),
        ({"source": "prometheus", "prometheus": {"url": "http://"}}, "is not an http(s) URL with a host"),
        ({"source": "prometheus", "prometheus": {"url": "http://p:9090/?x=1"}}, "must not carry a query"),
        ({"source": "prometheus", "prometheus": {"url": "http://p:9090", "timeout": 0}}, "must be positive"),
        (
            {"source": "prometheus", "prometheus": {"url": "http://p", "selector": "{job='x'}"}},
            "without braces",
        ),
        (
            {"source": "graphite", "prometheus": {"url": "http://p"}},
            "Input should be 'inprocess' or 'prometheus'",
        ),
        ({"source": "prometheus", "prometheus": {"url": "http://p", "token": "x"}}, "unknown key"),
    ],
)
def test_lint_rules_of_the_prometheus_source(analysis: dict[str, Any], message: str) -> None:
    found = lint_messages(analysis)
    assert any(message in m for m in found), found


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9090", "https://prometheus.monitoring.svc/prom/", "http://[::1]:9090"]
)
def test_loopback_and_remote_http_urls_are_valid(url: str) -> None:
    assert lint_messages({"source": "prometheus", "prometheus": {"url": url}}) == []


def test_the_example_in_the_docs_is_valid(tmp_path: Path) -> None:
    text = (Path(__file__).parents[2] / "docs" / "rollouts.md").read_text()
    section = text.split("## Gates fed by Prometheus", 1)[1]
    block = re.search(r"```\n(models:.*?)```", section, re.S)
    assert block is not None
    path = tmp_path / "rollouts.yaml"
    path.write_text(block.group(1))
    assert lint(path, {"churn": [7, 8]}) == []
    file = parse_rollouts(yaml.safe_load(block.group(1)))
    rollout = file.models["churn"].rollout
    assert rollout is not None and rollout.analysis.source == "prometheus"
