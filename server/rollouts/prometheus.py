"""Gate figures from a Prometheus server (``analysis.source: prometheus``): every replica's traffic.

Per evaluation, for the stable and the candidate version over the trailing ``window``, two instant
queries to ``<url>/api/v1/query``::

    sum by (version, outcome) (increase(sluice_requests_total{model=M, version=~"S|C",
                                        reason=~"split|sticky|default"}[W]))
    histogram_quantile(0.99, sum by (version, le) (rate(sluice_request_duration_seconds_bucket{
                                        model=M, version=~"S|C"}[W])))

As the in-process windows: only routed traffic (``split``, ``sticky``, ``default``) counts, a request is
an error when its status was 5xx (outcomes ``server_error``, ``shed``, ``timeout``), disconnects (499)
are left out, and the latency sample count is the successful requests. The duration histogram carries
no route reason, so p99 covers every request of the version (pinned ones too) and failed ones.

``fetch`` is blocking (stdlib ``urllib``) and never raises: an unreachable server, an HTTP error, a
Prometheus error answer or a malformed body yields ``Stats`` with ``unavailable`` set, which makes the
error-rate and latency gates ``insufficient`` with that reason. ``refresh`` runs it in a worker thread
so the event loop never waits on the network.
"""

from __future__ import annotations

import asyncio
import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sluice.converters.artifact.errors import PrometheusError
from sluice.server.rollouts.gates import Stats
from sluice.server.rollouts.spec import RolloutSpec

if TYPE_CHECKING:
    from sluice.server.rollouts.controller import RolloutController

ROUTED = "split|sticky|default"
ERROR_OUTCOMES = frozenset({"server_error", "shed", "timeout"})
SKIPPED_OUTCOMES = frozenset({"disconnected"})
SOURCE = "prometheus"

#: ``query(url, promql, timeout_s)`` -> the ``data.result`` vector; raises ``PrometheusError``.
Query = Callable[[str, str, float], list[dict[str, Any]]]


def http_query(url: str, promql: str, timeout_s: float) -> list[dict[str, Any]]:
    """One instant query over HTTP; the result vector, or ``PrometheusError`` saying why not."""
    endpoint = url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(endpoint, timeout=timeout_s) as response:  # http(s) only: linted
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read()).get("error", "")
        except (ValueError, OSError):
            reason = ""
        raise PrometheusError(f"HTTP {exc.code} from {url}" + (f": {reason}" if reason else "")) from exc
    except (urllib.error.URLError, OSError) as exc:
        why = getattr(exc, "reason", exc)
        raise PrometheusError(f"{url} unreachable: {why}") from exc
    except ValueError as exc:
        raise PrometheusError(f"{url} answered something that is not JSON") from exc
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error", "no status") if isinstance(body, dict) else "not an object"
        raise PrometheusError(f"{url} answered an error: {error}")
    data = body.get("data") or {}
    if data.get("resultType") != "vector" or not isinstance(data.get("result"), list):
        raise PrometheusError(f"{url} answered no instant vector")
    result: list[dict[str, Any]] = data["result"]
    return result


def _quote(value: str) -> str:
    return json.dumps(value)  # a PromQL string literal accepts JSON's escaping


class PrometheusFigures:
    """Reads one rollout's request figures from Prometheus; ``stats(version)`` gives the latest read."""

    def __init__(
        self,
        model: str,
        spec: RolloutSpec,
        *,
        query: Query = http_query,
        on_error: Callable[[str], None] = lambda reason: None,
    ) -> None:
        source = spec.analysis.prometheus
        assert source is not None  # lint: source prometheus needs prometheus.url
        self.model = model
        self.spec = spec
        self.url = source.url
        self.timeout_s = source.timeout
        self.selector = source.selector
        self._query = query
        self._on_error = on_error
        self.latest: dict[int, Stats] | None = None

    def queries(self) -> tuple[str, str]:
        window = f"{max(1, round(self.spec.analysis.window * 1000))}ms"
        versions = f"{self.spec.stable}|{self.spec.candidate}"
        extra = f",{self.selector}" if self.selector else ""
        labels = f"model={_quote(self.model)},version=~{_quote(versions)}{extra}"
        requests = (
            "sum by (version, outcome) (increase(sluice_requests_total"
            f"{{{labels},reason=~{_quote(ROUTED)}}}[{window}]))"
        )
        p99 = (
            "histogram_quantile(0.99, sum by (version, le) "
            f"(rate(sluice_request_duration_seconds_bucket{{{labels}}}[{window}])))"
        )
        return requests, p99

    def fetch(self) -> dict[int, Stats]:
        """Both versions' figures now; on any failure both carry ``unavailable`` (never raises)."""
        versions = (self.spec.stable, self.spec.candidate)
        try:
            requests_q, p99_q = self.queries()
            counts = self._query(self.url, requests_q, self.timeout_s)
            quantiles = self._query(self.url, p99_q, self.timeout_s)
            return self._parse(versions, counts, quantiles)
        except Exception as exc:  # a gate must never crash or silently pass on a bad source
            reason = str(exc) if isinstance(exc, PrometheusError) else f"{type(exc).__name__}: {exc}"
            self._on_error(reason)
            problem = f"prometheus: {reason}"
            return {v: Stats(source=SOURCE, unavailable=problem) for v in versions}

    def _parse(
        self, versions: tuple[int, ...], counts: list[dict[str, Any]], quantiles: list[dict[str, Any]]
    ) -> dict[int, Stats]:
        requests = dict.fromkeys(versions, 0.0)
        errors = dict.fromkeys(versions, 0.0)
        ok = dict.fromkeys(versions, 0.0)
        for row in counts:
            version, outcome = int(row["metric"]["version"]), row["metric"].get("outcome", "")
            value = float(row["value"][1])
            if version not in requests or outcome in SKIPPED_OUTCOMES or not math.isfinite(value):
                continue
            requests[version] += value
            if outcome in ERROR_OUTCOMES:
                errors[version] += value
            elif outcome == "ok":
                ok[version] += value
        p99: dict[int, float] = {}
        for row in quantiles:
            version, value = int(row["metric"]["version"]), float(row["value"][1])
            if version in requests and math.isfinite(value):
                p99[version] = value
        # increase() extrapolates to the window's edges: round to whole requests.
        return {
            v: Stats(
                requests=round(requests[v]),
                errors=min(round(errors[v]), round(requests[v])),
                source=SOURCE,
                p99_s=p99.get(v, 0.0),
                latency_samples=round(ok[v]),
            )
            for v in versions
        }

    async def refresh(self) -> None:
        """Fetch in a worker thread (the event loop never blocks on Prometheus)."""
        self.latest = await asyncio.to_thread(self.fetch)

    def stats(self, version: int) -> Stats:
        if self.latest is None:
            return Stats(source=SOURCE, unavailable="prometheus: no figures read yet")
        return self.latest.get(version) or Stats(source=SOURCE, unavailable="prometheus: version not queried")


async def refresh_due(
    rollouts: Sequence[tuple[PrometheusFigures | None, RolloutController | None, RolloutSpec | None]],
    now: float,
) -> None:
    """Read Prometheus (in worker threads) for every moving rollout whose next evaluation is due."""
    due = [
        figures.refresh()
        for figures, c, spec in rollouts
        if figures is not None
        and c is not None
        and spec is not None
        and c.moving
        and now - c.last_eval >= spec.analysis.interval
    ]
    if due:
        await asyncio.gather(*due)
