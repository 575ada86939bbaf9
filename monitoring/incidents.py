"""Alarms deduplicated into incidents: one drift is one event with a start, an end and a count.

A detector that keeps seeing drift raises an alarm again after each reset. Alarms on one *subject* (a
feature, the prediction, latency, errors of one version) while an incident on it is open join that
incident; the incident resolves once no alarm has come for ``resolve_after_s``. Starting and resolving
are logged; the monitor exports both as metrics.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("sluice.monitoring")

_ids = itertools.count(1)


@dataclass
class Incident:
    """One run of alarms on one subject; times are monotonic seconds (``*_at``), wall time for humans."""

    model: str
    version: int
    kind: str  # drift | prediction | latency | errors | shadow
    subject: str  # the feature name, or the kind for non-feature subjects
    started_at: float
    started_wall: float
    last_alarm_at: float
    signals: set[str] = field(default_factory=set)
    alarms: int = 0
    resolved_at: float | None = None
    id: int = field(default_factory=lambda: next(_ids))

    @property
    def open(self) -> bool:
        return self.resolved_at is None

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "subject": self.subject,
            "state": "open" if self.open else "resolved",
            "signals": sorted(self.signals),
            "alarms": self.alarms,
            "started": _iso(self.started_wall),
            "seconds_since_start": round(now - self.started_at, 3),
            "seconds_since_last_alarm": round(now - self.last_alarm_at, 3),
            "resolved_seconds_ago": None if self.resolved_at is None else round(now - self.resolved_at, 3),
        }


def _iso(wall: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall)) + f".{int(wall % 1 * 1000):03d}Z"


class Incidents:
    """The incidents of one monitor: open ones by subject, and a bounded history."""

    def __init__(
        self,
        resolve_after_s: float = 300.0,
        *,
        history: int = 200,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        on_change: Callable[[Incident, str], None] | None = None,
    ) -> None:
        self.resolve_after_s = resolve_after_s
        self._clock = clock
        self._wall = wall
        self._open: dict[tuple[str, int, str, str], Incident] = {}
        self._history: deque[Incident] = deque(maxlen=history)
        # Start times per version, kept whole: the rollout gate counts them over any period.
        self._starts: dict[tuple[str, int], list[tuple[float, str]]] = {}
        self._on_change = on_change

    def alarm(
        self,
        model: str,
        version: int,
        kind: str,
        subject: str,
        signal: str,
        at: float,
        *,
        count: int = 1,
        last_at: float | None = None,
    ) -> Incident:
        """Record an alarm raised at monotonic time ``at`` (or ``count`` of one stream, the last at
        ``last_at``); returns its incident (new or ongoing)."""
        key = (model, version, kind, subject)
        found = self._open.get(key)
        if found is None:
            wall = self._wall() - (self._clock() - at)
            found = self._open[key] = Incident(model, version, kind, subject, at, wall, at)
            self._history.append(found)
            self._starts.setdefault((model, version), []).append((at, kind))
            log.warning(
                "incident %d started: %s on %s of %s/%d (%s)", found.id, kind, subject, model, version, signal
            )
            if self._on_change is not None:
                self._on_change(found, "started")
        found.alarms += count
        found.signals.add(signal)
        found.last_alarm_at = max(found.last_alarm_at, at if last_at is None else last_at)
        return found

    def sweep(self, now: float | None = None) -> list[Incident]:
        """Resolve incidents quiet for ``resolve_after_s``; returns those resolved now."""
        now = self._clock() if now is None else now
        done = [i for i in self._open.values() if now - i.last_alarm_at >= self.resolve_after_s]
        for incident in done:
            incident.resolved_at = now
            del self._open[(incident.model, incident.version, incident.kind, incident.subject)]
            log.info(
                "incident %d resolved: %s on %s of %s/%d after %d alarm(s)",
                incident.id,
                incident.kind,
                incident.subject,
                incident.model,
                incident.version,
                incident.alarms,
            )
            if self._on_change is not None:
                self._on_change(incident, "resolved")
        return done

    def of(self, model: str, version: int) -> list[Incident]:
        return [i for i in self._history if i.model == model and i.version == version]

    def open_of(self, model: str, version: int) -> list[Incident]:
        return [i for i in self._open.values() if i.model == model and i.version == version]

    def started_since(self, model: str, version: int, since: float, kinds: frozenset[str]) -> int:
        starts = self._starts.get((model, version), [])
        return sum(1 for at, kind in starts if kind in kinds and at >= since)

    def forget(self, model: str, version: int) -> None:
        for key in [k for k in self._open if k[:2] == (model, version)]:
            del self._open[key]
        self._starts.pop((model, version), None)
