"""Prometheus metrics of one gateway, on a registry the app owns (never the global one).

Labels are bounded: ``model``, ``version``, ``outcome``, ``reason``, ``code``, and for monitoring
``feature`` (from the manifest, at most 64 per version), ``signal`` and ``kind`` (fixed sets); never
ids. Label children are cached: ``.labels()`` per request costs about 3 us, a cached child about 1 us.
Requests for a model the registry does not know are counted without a model label, so a scanner cannot
grow the series.

Several worker processes (``sluice serve --workers N``) share one view through prometheus-client's
multiprocess mode: the supervisor sets ``PROMETHEUS_MULTIPROC_DIR`` before the workers start, every value
then lives in a memory-mapped file of that directory, and ``/metrics`` collects them all
(``MultiProcessCollector``): counters and histograms are summed, each gauge aggregates as its
``multiprocess_mode`` says (chosen per gauge below). Without the variable nothing changes.
"""

from __future__ import annotations

import contextlib
import glob
import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

#: What a request's HTTP status says about it, as the ``outcome`` label.
OUTCOMES = {200: "ok", 429: "shed", 499: "disconnected", 503: "shed", 504: "timeout"}

CONTENT_TYPE = CONTENT_TYPE_LATEST

#: Set by the ``--workers`` supervisor: where every worker's metric files live.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """The shared metrics directory when this process is one of several workers, else ``None``."""
    return os.environ.get(MULTIPROC_ENV) or None


def forget_dead_workers(directory: str) -> list[int]:
    """Drop the live-gauge files of workers that no longer run (a crashed one never cleans up itself).

    Their counters and histograms stay: what they served was served. Returns the pids marked dead.
    """
    dead = set()
    for path in glob.glob(os.path.join(directory, "gauge_live*_*.db")):
        pid = int(path.rsplit("_", 1)[1].removesuffix(".db"))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            dead.add(pid)
        except PermissionError:  # alive, someone else's
            pass
    for pid in sorted(dead):
        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
    return sorted(dead)


def outcome_of(status: int) -> str:
    if status in OUTCOMES:
        return OUTCOMES[status]
    return "client_error" if status < 500 else "server_error"


class Metrics:
    """Every metric sluice exports, with cached label children for the hot path."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "sluice_requests",
            "Inference requests by model, version, outcome and route reason.",
            ["model", "version", "outcome", "reason"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "sluice_request_duration_seconds",
            "Inference request latency, body read to response built.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_seconds = Histogram(
            "sluice_queue_duration_seconds",
            "Time a request waited in the batch queue.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.compute_seconds = Histogram(
            "sluice_compute_duration_seconds",
            "Model execution time per batch.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_rows = Histogram(
            "sluice_batch_size_rows",
            "Rows per executed batch.",
            ["model", "version"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.queue_rows = Gauge(
            "sluice_queue_rows",
            "Rows waiting in the batch queue.",
            ["model", "version"],
            registry=r,
            # Rows waiting in every live worker's queue: a sum (a dead worker's rows are gone).
            multiprocess_mode="livesum",
        )
        self.in_flight = Gauge(
            "sluice_in_flight_requests",
            "Inference requests being served now.",
            registry=r,
            multiprocess_mode="livesum",  # requests in flight across the live workers
        )
        self.shed = Counter(
            "sluice_shed_requests",
            "Requests rejected or dropped before they ran, by reason.",
            ["model", "version", "reason"],
            registry=r,
        )
        self.unrouted = Counter(
            "sluice_unrouted_requests",
            "Inference requests that named no known model or version, by status.",
            ["code"],
            registry=r,
        )
        self.version_ready = Gauge(
            "sluice_model_version_ready",
            "1 while a model version is ready to serve.",
            ["model", "version"],
            registry=r,
            # A request may land on any worker: ready only when every live worker that has loaded the
            # version says so (the minimum), so one worker that unloaded it shows 0.
            multiprocess_mode="livemin",
        )
        # ----- rollouts and shadows (sluice.server.rollouts) -----
        self.rollout_weight = Gauge(
            "sluice_rollout_weight_percent",
            "Percent of a model's routed traffic each version receives now.",
            ["model", "version"],
            registry=r,
            # Weight, phase and step are decided by the one worker that owns the rollouts; the others copy
            # its state file. The most recent write of a live worker is therefore the owner's latest
            # decision (or a copy of it); "max" would keep a rolled-back candidate's old weight.
            multiprocess_mode="livemostrecent",
        )
        self.rollout_phase = Gauge(
            "sluice_rollout_phase",
            "1 for a rollout's current phase (idle, shadowing, progressing, paused, succeeded, failed).",
            ["model", "phase"],
            registry=r,
            multiprocess_mode="livemostrecent",  # as the weight
        )
        self.rollout_step = Gauge(
            "sluice_rollout_step",
            "Index of a rollout's current step.",
            ["model"],
            registry=r,
            multiprocess_mode="livemostrecent",  # as the weight
        )
        self.rollout_gate = Counter(
            "sluice_rollout_gate_results",
            "Gate evaluations by metric and verdict (pass, fail, insufficient).",
            ["model", "metric", "result"],
            registry=r,
        )
        self.rollout_gate_value = Gauge(
            "sluice_rollout_gate_value",
            "The candidate's value of each gate metric at the latest evaluation.",
            ["model", "metric"],
            registry=r,
            # Only the rollout owner evaluates gates; after a takeover the new owner's value is the newest.
            multiprocess_mode="livemostrecent",
        )
        self.rollout_prometheus_errors = Counter(
            "sluice_rollout_prometheus_errors",
            "Gate evaluations whose Prometheus figures could not be read (analysis.source: prometheus).",
            ["model"],
            registry=r,
        )
        self.rollout_config_rejected = Counter(
            "sluice_rollout_config_rejected",
            "Rollouts files rejected on load or reload (the previous routing stayed).",
            registry=r,
        )
        self.rollout_waiting = Gauge(
            "sluice_rollout_waiting_seconds",
            "How long a rollout has been held by a gate that stays insufficient (0 when not waiting); "
            "past analysis.insufficient_after the status and an event say 'waiting for ...'.",
            ["model", "gate"],
            registry=r,
            multiprocess_mode="livemostrecent",  # as the weight
        )
        self.rollout_leader = Gauge(
            "sluice_rollout_leader",
            "1 while this process leads the rollouts (holds the controller lock or the store's lease).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.rollout_store_up = Gauge(
            "sluice_rollout_store_up",
            "1 while the shared rollout store (rollout_store) answers; 0 while it cannot be reached "
            "(routing stays as it was, no step moves).",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.shadow_score = Histogram(
            "sluice_shadow_score_difference",
            "Per row, |shadow - primary| of the compared score: a classifier's probability of the primary's "
            "decision, or a regressor's output divided by its reference spread.",
            ["model", "version"],
            buckets=(1e-6, 1e-4, 1e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0),
            registry=r,
        )
        self.shadow_requests = Counter(
            "sluice_shadow_requests",
            "Mirrored requests by outcome (ok, error, timeout, dropped).",
            ["model", "version", "outcome"],
            registry=r,
        )
        self.shadow_agreement = Counter(
            "sluice_shadow_comparisons",
            "Shadow outputs compared with the primary's, by result (agree, disagree).",
            ["model", "version", "result"],
            registry=r,
        )
        self.shadow_difference = Histogram(
            "sluice_shadow_abs_difference",
            "Largest |shadow - primary| of the compared numeric outputs, per request.",
            ["model", "version"],
            buckets=(1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=r,
        )
        # ----- monitoring (sluice.monitoring.monitor): bounded by model, version, feature and signal -----
        self.drift_alarms = Counter(
            "sluice_drift_alarms",
            "Drift alarms on an input feature, by signal (mean, variance, share, unseen, missing).",
            ["model", "version", "feature", "signal"],
            registry=r,
        )
        self.drift_status = Gauge(
            "sluice_drift_status",
            "1 while a drift incident is open on an input feature.",
            ["model", "version", "feature"],
            registry=r,
            # Each worker's detectors see their own share of traffic: open if any live worker's is.
            multiprocess_mode="livemax",
        )
        self.prediction_alarms = Counter(
            "sluice_prediction_drift_alarms",
            "Prediction drift alarms, by signal (score, class).",
            ["model", "version", "signal"],
            registry=r,
        )
        self.anomaly_alarms = Counter(
            "sluice_anomaly_alarms",
            "Latency, error and shadow anomaly alarms, by signal (latency, latency_tail, errors, "
            "disagreement, difference).",
            ["model", "version", "signal"],
            registry=r,
        )
        self.incidents = Counter(
            "sluice_monitoring_incidents",
            "Monitoring incidents started, by kind (drift, prediction, latency, errors, client_errors, "
            "shadow).",
            ["model", "version", "kind"],
            registry=r,
        )
        self.incidents_open = Gauge(
            "sluice_monitoring_incidents_open",
            "Monitoring incidents open now, by kind.",
            ["model", "version", "kind"],
            registry=r,
            # Incidents of independent per-worker detectors: the live workers' open incidents add up.
            multiprocess_mode="livesum",
        )
        self.observations_dropped = Counter(
            "sluice_monitoring_observations_dropped",
            "Observations the monitor did not take (queue full), so not seen by its detectors.",
            ["model", "version", "reason"],
            registry=r,
        )
        self._children: dict[tuple[Any, ...], Any] = {}
        self._shared: CollectorRegistry | None = None

    def child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def observe_request(
        self, model: str, version: str, status: int, reason: str, seconds: float, outcome: str | None = None
    ) -> None:
        """Count one request; ``outcome`` overrides the one its status implies (``client_timeout``)."""
        # One look-up per request for both series (the key's shape keeps forget() dropping it).
        key = ("request", model, version, status, reason, outcome)
        pair = self._children.get(key)
        if pair is None:
            pair = self._children[key] = (
                self.requests.labels(model, version, outcome or outcome_of(status), reason),
                self.request_seconds.labels(model, version) if status == 200 else None,
            )
        pair[0].inc()
        if pair[1] is not None:
            pair[1].observe(seconds)

    def forget(self, model: str, version: str) -> None:
        """Drop the per-version series of an unloaded version (its ready gauge goes to 0)."""
        self.child(self.version_ready, model, version).set(0)
        if multiprocess_dir() is not None:  # series cannot be removed from the shared files
            self.child(self.queue_rows, model, version).set(0)
        else:
            with contextlib.suppress(KeyError):
                self.queue_rows.remove(model, version)
        self._children = {
            k: v
            for k, v in self._children.items()
            if k[1:3] != (model, version) or k[0] == id(self.version_ready)
        }

    def exposition(self) -> bytes:
        """The text exposition: this registry, or every worker's files in multiprocess mode."""
        directory = multiprocess_dir()
        if directory is None:
            return generate_latest(self.registry)
        if self._shared is None:
            self._shared = CollectorRegistry()
            multiprocess.MultiProcessCollector(self._shared, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(self._shared)
