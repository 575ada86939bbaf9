"""The observer: a bounded queue filled by the hot path and one background task that drains it.

``observe`` is all a request pays for: a dictionary look-up, an optional sampling draw and ``put_nowait``
on a bounded ``asyncio.Queue``; when the queue is full the observation is dropped and counted, so the hot
path never waits. The background task (``start``/``stop``, owned by the app's lifespan) takes chunks off
the queue and feeds them to each version's ``VersionMonitor`` on the event loop, one step (a feature
bank, the prediction streams...) at a time, yielding between steps and resting so that it takes at most
``cpu_share`` of the loop's time; alarms become incidents and metrics there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from sluice.converters.artifact.profile import Profile
from sluice.monitoring.incidents import Incident, Incidents
from sluice.monitoring.layout import Layout, Observation, WatchOptions
from sluice.monitoring.metrics import Metrics
from sluice.monitoring.shadow import Pair, ShadowPairs
from sluice.monitoring.streams import Alarm
from sluice.monitoring.version import VersionMonitor

log = logging.getLogger("sluice.monitoring")

#: Steps starting this late on average mean a loop saturated with requests: the detectors' share is
#: then multiplied by SATURATED_SHARE (P5, monitoring's cost at saturation, against P7 and S10, no
#: observation dropped below it).
SATURATED_LAG_S = 0.002
SATURATED_SHARE = 0.3

#: What the background task feeds: a version's streams, or a shadow version's paired streams.
Target = VersionMonitor | ShadowPairs

#: Observations per chunk with no backlog (``chunk_size`` is the most, for a backlog).
MIN_CHUNK = 32

#: Incident kinds the rollout drift gate counts.
DRIFT_KINDS = frozenset({"drift", "prediction"})


class Monitor:
    """Watches every registered model version; see the module docstring."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        queue_size: int = 10_000,
        chunk_size: int = 128,
        resolve_after_s: float = 300.0,
        sweep_interval_s: float = 1.0,
        cpu_share: float = 0.1,
        max_queued_rows: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics
        self.queue_size = queue_size
        self.cpu_share = cpu_share
        self._next_step_at = 0.0  # perf_counter time before which the next step rests (see _process)
        self._in_progress = 0  # observations of the chunk being fed, step by step
        self._lag_s = 0.0  # how late steps start, smoothed: the loop's congestion (see pace)
        self.max_queued_rows = max_queued_rows
        self._queued_rows = 0
        self.chunk_size = chunk_size
        self.sweep_interval_s = sweep_interval_s
        self._clock = clock
        self._versions: dict[tuple[str, int], VersionMonitor] = {}
        self._pairs: dict[tuple[str, int], ShadowPairs] = {}  # a shadow version's paired streams
        self._dropped: dict[tuple[str, int], Any] = {}
        self._queue: asyncio.Queue[tuple[Target, Observation | Pair]] | None = None
        self._task: asyncio.Task[None] | None = None
        # Detectors are fed on a worker thread and read by snapshots; incidents have their own lock so
        # the rollout gate (on the event loop) never waits for a chunk to finish.
        self._lock = threading.Lock()
        self._incidents_lock = threading.Lock()
        self.incidents_log = Incidents(resolve_after_s, clock=clock, on_change=self._on_incident)

    # ----- versions -----------------------------------------------------------------------------

    async def watch(
        self, model: str, version: int, layout: Layout, profile: Profile | None, options: WatchOptions
    ) -> None:
        """Start watching a version, its detectors calibrated from its profile first.

        Calibration replays the reference (about a second for 32 features) on a worker thread, before the
        version takes traffic: done on the first chunk instead, it held the GIL while requests waited.
        What the profile lacks (latency, errors, features without a profile) is calibrated later, from the
        first requests, by the background task.
        """
        vm = VersionMonitor(model, version, layout, profile, options)
        await asyncio.to_thread(vm.start)
        with self._lock:
            self._versions[(model, version)] = vm
        self._dropped[(model, version)] = self.metrics.child(
            self.metrics.observations_dropped, model, str(version), "queue_full"
        )

    def forget(self, model: str, version: int) -> None:
        with self._lock:
            self._versions.pop((model, version), None)
            self._pairs.pop((model, version), None)
            self._dropped.pop((model, version), None)
        with self._incidents_lock:
            self.incidents_log.forget(model, version)

    # ----- the hot path -------------------------------------------------------------------------

    def observe(
        self,
        model: str,
        version: int,
        inputs: dict[str, Any] | None,
        outputs: dict[str, Any] | None,
        latency_s: float,
        error: bool,
    ) -> None:
        """Hand one finished request over; never blocks, never raises on a full queue."""
        vm = self._versions.get((model, version))
        queue = self._queue
        if vm is None or queue is None:
            return
        rate = vm.options.sample_rate
        if rate < 1.0 and random.random() >= rate:
            return
        rows = _rows(inputs)
        # Bounded in rows as well as in observations: 10,000 requests of 1,000 rows each would be GBs.
        if self._queued_rows + rows > self.max_queued_rows or queue.full():
            vm.dropped += 1
            self._dropped[(model, version)].inc()
            return
        self._queued_rows += rows
        queue.put_nowait((vm, Observation(inputs, outputs, latency_s, error, self._clock())))

    def observe_client_error(self, model: str, version: int) -> None:
        """Hand over one request answered 4xx (the client's fault); never blocks.

        It feeds the client-errors stream only: never the version's latency, errors or features.
        """
        vm = self._versions.get((model, version))
        queue = self._queue
        if vm is None or queue is None:
            return
        rate = vm.options.sample_rate
        if rate < 1.0 and random.random() >= rate:
            return
        if queue.full():
            vm.dropped += 1
            self._dropped[(model, version)].inc()
            return
        self._queued_rows += 1
        queue.put_nowait((vm, Observation(None, None, 0.0, False, self._clock(), True)))

    def observe_pair(
        self, model: str, version: int, primary: dict[str, Any], shadow: dict[str, Any], agree: bool
    ) -> None:
        """Hand over one compared shadow request (``version`` is the shadow's); never blocks."""
        queue = self._queue
        vm = self._versions.get((model, version))
        if vm is None or queue is None:
            return
        pairs = self._pairs.get((model, version))
        if pairs is None:
            with self._lock:
                pairs = self._pairs[(model, version)] = ShadowPairs(
                    model, version, vm.layout, vm.options, vm.detectors() + 2
                )
        if queue.full():
            vm.dropped += 1
            self._dropped[(model, version)].inc()
            return
        queue.put_nowait((pairs, Pair(primary, shadow, agree, self._clock())))

    @property
    def queued_rows(self) -> int:
        """Input rows waiting for the background task."""
        return self._queued_rows

    # ----- the background task ------------------------------------------------------------------

    async def start(self) -> None:
        self._queue = asyncio.Queue(self.queue_size)
        self._task = asyncio.create_task(self._drain(), name="sluice-monitoring")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _drain(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            try:
                # Not asyncio.wait_for: on 3.11 it can swallow a cancel that lands as the queue yields an
                # item, and stop() then waited for ever (test_rollouts_e2e hung at teardown 1 run in 3).
                async with asyncio.timeout(self.sweep_interval_s):
                    first = await queue.get()
            except TimeoutError:
                self._sweep()
                continue
            # Small chunks keep each step short (a request waits for one step at most); a backlog takes
            # bigger ones, which cost less per row, so the task catches up instead of dropping.
            take = min(max(MIN_CHUNK, queue.qsize() // 8), self.chunk_size)
            chunk = [first]
            while len(chunk) < take and not queue.empty():
                chunk.append(queue.get_nowait())
            self._queued_rows -= sum(_rows(obs.inputs) for _, obs in chunk if isinstance(obs, Observation))
            self._in_progress = len(chunk)
            try:
                await self._process(chunk)
            except Exception:  # a bad observation must never stop monitoring
                log.exception("monitoring failed on a chunk of %d observations", len(chunk))
            finally:
                self._in_progress = 0
            self._sweep()

    def _sweep(self) -> None:
        with self._incidents_lock:
            self.incidents_log.sweep()

    async def _process(self, chunk: list[tuple[Target, Observation | Pair]]) -> None:
        """Feed ``chunk`` to its versions one step at a time, resting after each in proportion to it.

        The detectors run here, on the event loop, not on a worker thread: a thread holding the GIL
        made every request wait for the interpreter's switch interval (5 ms) at each system call, which
        was the whole of P7's p99. Each step is short, and the rest after it (``cpu_share``) is long
        enough for the requests that arrived meanwhile to go through their several loop iterations
        before the next step; what arrives meanwhile waits in the queue, or is dropped and counted.
        """
        by_target: dict[int, tuple[Target, list[Any]]] = {}
        for target, obs in chunk:
            by_target.setdefault(id(target), (target, []))[1].append(obs)
        for vm, observations in by_target.values():
            registry: dict[tuple[str, int], Any] = (
                self._pairs if isinstance(vm, ShadowPairs) else self._versions
            )
            steps = vm.steps(observations)
            while True:
                started = time.perf_counter()
                with self._lock:
                    if registry.get((vm.model, vm.version)) is not vm:
                        break  # forgotten while queued or between steps
                    alarms = next(steps, None)
                if alarms is None:
                    break
                if alarms:
                    with self._incidents_lock:
                        self._record(vm, alarms)
                await asyncio.sleep(self.pace(started, time.perf_counter()))

    def pace(self, started: float, now: float) -> float:
        """Seconds to rest after a step that ran from ``started`` to ``now``, to stay within the share.

        The rest is ``busy * (1 - share) / share``: a request that arrives during a step waits for that
        step only, and then has the loop to itself for a while. When steps keep starting late (the rest's
        timer fires late) the loop is saturated with requests: the share then drops to
        ``SATURATED_SHARE`` of it, so the detectors take less of a busy gateway's throughput; observations
        they cannot take are dropped and counted.
        """
        if self.cpu_share >= 1.0:
            return 0.0
        expected = self._next_step_at
        if expected and started - expected < 1.0:  # the rest before this step: how late did it end?
            self._lag_s += 0.2 * (max(started - expected, 0.0) - self._lag_s)
        share = self.cpu_share * (SATURATED_SHARE if self._lag_s > SATURATED_LAG_S else 1.0)
        rest = (now - started) * (1.0 - share) / share
        self._next_step_at = now + rest
        return rest

    @property
    def saturated(self) -> bool:
        """Whether the steps find the loop saturated (and run on ``SATURATED_SHARE`` of ``cpu_share``)."""
        return self._lag_s > SATURATED_LAG_S

    def _record(self, vm: Target, alarms: list[Alarm]) -> None:
        """Count a step's alarms into metrics and incidents, once per stream.

        A drifted stream alarms every few samples (detectors restart after each alarm), so a step can
        hold hundreds: per alarm, this was most of the monitor's time exactly while something drifted.
        """
        by_stream: dict[int, list[Any]] = {}
        for alarm in alarms:
            seen = by_stream.get(id(alarm.stream))
            if seen is None:
                by_stream[id(alarm.stream)] = [alarm.stream, 1, alarm.at, alarm.at]
            else:
                seen[1] += 1
                seen[3] = max(seen[3], alarm.at)
        m, labels = self.metrics, (vm.model, str(vm.version))
        for s, count, first_at, last_at in by_stream.values():
            if s.kind == "drift":
                m.child(m.drift_alarms, *labels, s.subject, s.signal).inc(count)
            elif s.kind == "prediction":
                m.child(m.prediction_alarms, *labels, s.signal).inc(count)
            else:
                m.child(m.anomaly_alarms, *labels, s.signal).inc(count)
            self.incidents_log.alarm(
                vm.model, vm.version, s.kind, s.subject, s.signal, first_at, count=count, last_at=last_at
            )

    def _on_incident(self, incident: Incident, change: str) -> None:
        m, labels = self.metrics, (incident.model, str(incident.version))
        up = 1 if change == "started" else -1
        if change == "started":
            m.child(m.incidents, *labels, incident.kind).inc()
        m.child(m.incidents_open, *labels, incident.kind).inc(up)
        if incident.kind == "drift":
            m.child(m.drift_status, *labels, incident.subject).set(1 if up > 0 else 0)

    # ----- reading ------------------------------------------------------------------------------

    def incidents(self, model: str, version: int, since_monotonic: float) -> int:
        """Drift incidents (inputs or prediction) on ``model``/``version`` started at or after ``since``."""
        with self._incidents_lock:
            return self.incidents_log.started_since(model, version, since_monotonic, DRIFT_KINDS)

    def snapshot(self, model: str, version: int) -> dict[str, Any]:
        """What the monitoring endpoint shows for one version (``{"watched": False}`` if not watched)."""
        with self._lock:
            vm = self._versions.get((model, version))
            if vm is None:
                return {"model": model, "version": str(version), "watched": False}
            now = self._clock()
            body = vm.snapshot(now)
            pairs = self._pairs.get((model, version))
            wall = time.time()
            body["shadow"] = None if pairs is None else pairs.snapshot(lambda at: _iso(wall - (now - at)))
        body["watched"] = True
        # Queued, or taken and not yet through every step (a snapshot can come between two steps).
        body["pending"] = (0 if self._queue is None else self._queue.qsize()) + self._in_progress
        body["saturated"] = self.saturated  # the detectors run on a reduced share (see pace)
        with self._incidents_lock:
            open_by_subject = {(i.kind, i.subject) for i in self.incidents_log.open_of(model, version)}
            history = [i.to_json(now) for i in reversed(self.incidents_log.of(model, version))]
        for name, feature in body["features"].items():
            feature["drift"] = ("drift", name) in open_by_subject
        body["prediction"]["drift"] = ("prediction", "prediction") in open_by_subject
        body["latency"]["anomaly"] = ("latency", "latency") in open_by_subject
        body["errors"]["anomaly"] = ("errors", "errors") in open_by_subject
        body["client_errors"]["anomaly"] = ("client_errors", "client_errors") in open_by_subject
        if body["shadow"] is not None:
            body["shadow"]["anomaly"] = ("shadow", "shadow") in open_by_subject
        body["incidents"] = history
        return body


def _iso(wall: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall)) + f".{int(wall % 1 * 1000):03d}Z"


def _rows(inputs: dict[str, Any] | None) -> int:
    """Rows in one observation: the first dimension of its first input (1 without inputs)."""
    if not inputs:
        return 1
    first = next(iter(inputs.values()))
    return int(first.shape[0]) if getattr(first, "ndim", 0) else 1
