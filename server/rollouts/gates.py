"""Rollout gates: per-version windows of what happened, and the checks that read them.

A ``GateWindow`` keeps one version's recent requests (error or not, latency) and shadow comparisons, bounded
in memory; ``Analyzer`` turns the stable's and the candidate's windows into one ``GateResult`` per gate:
``pass``, ``fail`` or ``insufficient`` (fewer than ``min_samples``: low traffic never silently passes).
Only routed traffic feeds the windows: pinned versions, labels and overrides are not a random sample.
Drift comes from the monitoring layer through ``DriftSource``; without one the drift gate is
``insufficient: no monitor``. With ``analysis.source: prometheus`` the request figures (requests,
errors, p99) come from ``figures`` (``sluice.server.rollouts.prometheus``) instead; a source that could not be
read makes the error-rate and latency gates ``insufficient`` with its reason, never a pass.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

import numpy as np

from sluice.server.rollouts.spec import Gate, RolloutSpec

PASS, FAIL, INSUFFICIENT = "pass", "fail", "insufficient"


class DriftSource(Protocol):
    """Anything that counts drift incidents of a version since a monotonic time (monitoring's ``Monitor``)."""

    def incidents(self, model: str, version: int, since_monotonic: float) -> int: ...


@dataclass(frozen=True)
class Stats:
    """One version over one window."""

    requests: int = 0
    errors: int = 0
    latencies_s: tuple[float, ...] = ()
    compared: int = 0
    disagreements: int = 0
    #: Where the request figures came from: ``inprocess`` (this process's window) or ``prometheus``.
    source: str = "inprocess"
    #: Set by an external source that already computed p99 and counted the successful requests.
    p99_s: float | None = None
    latency_samples: int | None = None
    #: Why the request figures could not be read (the error-rate and latency gates are then insufficient).
    unavailable: str = ""

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def p99_ms(self) -> float:
        if self.p99_s is not None:
            return self.p99_s * 1e3
        return float(np.percentile(self.latencies_s, 99)) * 1e3 if self.latencies_s else 0.0

    @property
    def latency_count(self) -> int:
        return self.latency_samples if self.latency_samples is not None else len(self.latencies_s)

    @property
    def disagreement(self) -> float:
        return self.disagreements / self.compared if self.compared else 0.0


class GateWindow:
    """Recent outcomes of one version, on the caller's monotonic clock; at most ``max_events`` of each."""

    def __init__(self, max_events: int = 100_000) -> None:
        self._requests: deque[tuple[float, bool, float | None]] = deque(maxlen=max_events)
        self._comparisons: deque[tuple[float, int, int]] = deque(maxlen=max_events)

    def record(self, now: float, *, error: bool, latency_s: float | None) -> None:
        self._requests.append((now, error, latency_s))

    def compared(
        self, now: float, *, agree: bool = True, rows: int = 1, disagreements: int | None = None
    ) -> None:
        """One compared request: ``rows`` rows of which ``disagreements`` disagree (all, if not ``agree``)."""
        bad = disagreements if disagreements is not None else (0 if agree else rows)
        self._comparisons.append((now, rows, bad))

    def clear(self) -> None:
        self._requests.clear()
        self._comparisons.clear()

    def stats(self, now: float, window_s: float) -> Stats:
        since = now - window_s
        requests = [r for r in self._requests if r[0] >= since]
        comparisons = [c for c in self._comparisons if c[0] >= since]
        return Stats(
            requests=len(requests),
            errors=sum(1 for r in requests if r[1]),
            latencies_s=tuple(r[2] for r in requests if r[2] is not None and not r[1]),
            compared=sum(c[1] for c in comparisons),
            disagreements=sum(c[2] for c in comparisons),
        )


@dataclass(frozen=True)
class GateResult:
    metric: str
    verdict: str
    value: float | None
    stable: float | None
    detail: str
    samples: int
    dry_run: bool = False
    source: str = "inprocess"

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        for key in ("value", "stable"):
            if isinstance(body[key], float):
                body[key] = round(body[key], 6)
        return body


def check(
    gate: Gate, candidate: Stats, stable: Stats, min_samples: int, drift: int | None = None
) -> GateResult:
    """One gate's verdict on the candidate's (and the stable's) window."""

    source = "inprocess" if gate.metric in ("drift", "shadow_disagreement") else candidate.source

    def result(verdict: str, value: float | None, base: float | None, detail: str, n: int) -> GateResult:
        return GateResult(gate.metric, verdict, value, base, detail, n, gate.dry_run, source)

    if gate.metric == "drift":
        if drift is None:
            return result(INSUFFICIENT, None, None, "insufficient: no monitor", 0)
        allowed = gate.max_alarms or 0
        verdict = FAIL if drift > allowed else PASS
        return result(verdict, drift, None, f"{drift} drift alarms (max {allowed})", drift)
    if gate.metric == "shadow_disagreement":
        n, value = candidate.compared, candidate.disagreement
        if n < min_samples:
            return result(INSUFFICIENT, value, None, f"{n} of {min_samples} shadow comparisons", n)
        assert gate.max is not None
        verdict = FAIL if value > gate.max else PASS
        return result(verdict, value, None, f"disagreement {value:.4f} (max {gate.max:g})", n)
    relative: float | None
    problem = candidate.unavailable or stable.unavailable
    if problem:
        return result(INSUFFICIENT, None, None, f"insufficient: {problem}", 0)
    if gate.metric == "error_rate":
        n, value, base = candidate.requests, candidate.error_rate, stable.error_rate
        base_n, relative, name = stable.requests, gate.max_increase_over_stable, "error rate"
    else:
        n, value, base = candidate.latency_count, candidate.p99_ms, stable.p99_ms
        base_n, relative, name = stable.latency_count, gate.max_ratio_to_stable, "p99 latency ms"
    limit = gate.max
    if n < min_samples:
        return result(INSUFFICIENT, value, base, f"{n} of {min_samples} candidate samples", n)
    if limit is not None and value > limit:
        return result(FAIL, value, base, f"{name} {value:.4g} over the max {limit:g}", n)
    if relative is not None:
        if base_n < min_samples:
            return result(INSUFFICIENT, value, base, f"{base_n} of {min_samples} stable samples", n)
        if _over(gate.metric, value, base, relative):
            how = "more than" if gate.metric == "error_rate" else "over"
            return result(
                FAIL, value, base, f"{name} {value:.4g} is {how} {relative:g} from stable's {base:.4g}", n
            )
    return result(PASS, value, base, f"{name} {value:.4g}", n)


def _over(metric: str, value: float, base: float, relative: float) -> bool:
    if metric == "error_rate":
        return value - base > relative
    return base > 0 and value / base > relative


def combine(results: list[GateResult], on_insufficient: str) -> str:
    """The evaluation's verdict: any failing gate fails; dry-run gates never count."""
    counted = [r.verdict for r in results if not r.dry_run]
    if FAIL in counted:
        return FAIL
    if INSUFFICIENT in counted:
        return {"hold": INSUFFICIENT, "pass": PASS, "fail": FAIL}[on_insufficient]
    return PASS


class Analyzer:
    """Evaluates a rollout's gates at a moment, over its trailing window."""

    def __init__(
        self,
        model: str,
        spec: RolloutSpec,
        window_of: Callable[[int], GateWindow | FleetWindow],
        drift: DriftSource | None = None,
        *,
        drift_clock: Callable[[float], float] = lambda now: now,
        figures: Callable[[int], Stats] | None = None,
    ) -> None:
        self.model = model
        self.spec = spec
        self._window_of = window_of
        self._drift = drift
        self._drift_clock = drift_clock
        self._figures = figures

    def __call__(self, now: float) -> list[GateResult]:
        a = self.spec.analysis
        candidate = self._window_of(self.spec.candidate).stats(now, a.window)
        stable = self._window_of(self.spec.stable).stats(now, a.window)
        if self._figures is not None:  # requests, errors, latency from outside; shadow figures stay ours
            candidate = _merged(self._figures(self.spec.candidate), candidate)
            stable = _merged(self._figures(self.spec.stable), stable)
        alarms = None
        if self._drift is not None and any(g.metric == "drift" for g in self.spec.gates):
            since = self._drift_clock(now - a.window)
            alarms = self._drift.incidents(self.model, self.spec.candidate, since)
        return [check(g, candidate, stable, a.min_samples, alarms) for g in self.spec.gates]


class FleetWindow:
    """One version's window on this replica plus the windows the other replicas published to the shared
    store (``RedisStore.fleet``): the gates of the leader judge the whole fleet's traffic."""

    def __init__(self, local: GateWindow, others: Callable[[], list[Stats]]) -> None:
        self.local = local
        self._others = others

    def stats(self, now: float, window_s: float) -> Stats:
        return merged(self.local.stats(now, window_s), self._others())


def merged(local: Stats, others: list[Stats]) -> Stats:
    """One window over the whole fleet: counts summed, p99 from every replica's latencies, each weighted
    by how many requests its sample stands for.

    >>> a = Stats(requests=2, errors=1, latencies_s=(0.1,))
    >>> m = merged(a, [Stats(requests=3, latencies_s=(0.2, 0.3), latency_samples=3)])
    >>> m.requests, m.errors, m.latency_count
    (5, 1, 4)
    """
    if not others:
        return local
    parts = [local, *others]
    values, weights = [], []
    for part in parts:
        sample = np.asarray(part.latencies_s, dtype=np.float64)
        if sample.size:
            values.append(sample)
            weights.append(np.full(sample.size, part.latency_count / sample.size))
    p99 = None
    if values:
        v, w = np.concatenate(values), np.concatenate(weights)
        order = np.argsort(v)
        cumulative = np.cumsum(w[order])
        p99 = float(v[order][np.searchsorted(cumulative, 0.99 * cumulative[-1])])
    return Stats(
        requests=sum(p.requests for p in parts),
        errors=sum(p.errors for p in parts),
        compared=sum(p.compared for p in parts),
        disagreements=sum(p.disagreements for p in parts),
        p99_s=p99,
        latency_samples=sum(p.latency_count for p in parts),
        source="fleet",
    )


def _merged(external: Stats, local: Stats) -> Stats:
    """``external``'s request figures with ``local``'s shadow comparisons."""
    return replace(external, compared=local.compared, disagreements=local.disagreements)
