"""A version's latency and errors under watch, always against its own first ``reference_size`` requests.

Latency follows load, so no profile could hold its reference: the first requests give the log-latency
reference (PageHinkley, against the stream's own past), the p99 whose exceedances a Bernoulli CUSUM
watches, and the base error rate another one watches for an ``ERROR_LIFT``-fold rise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from sluice.monitoring.layout import Observation
from sluice.monitoring.reference import NumericReference
from sluice.monitoring.streams import (
    ERROR_LIFT,
    MIN_RATE,
    TAIL_LIFT,
    Alarm,
    Stream,
    latency_stream,
    log_latency,
    rate_stream,
    standardize,
    tail_threshold,
)

#: Successful requests' latencies needed (besides ``reference_size`` requests) for a latency reference.
MIN_LATENCY_SAMPLES = 30


@dataclass(eq=False)
class HealthDetectors:
    """Latency (log, standardised), latency above the reference p99, and the error bit."""

    latency: Stream
    tail: Stream
    errors: Stream

    @classmethod
    def planned(cls) -> int:
        """How many detectors ``HealthWatch`` builds: one per field."""
        return len(fields(cls))

    def streams(self) -> list[Stream]:
        return [self.latency, self.tail, self.errors]


class HealthWatch:
    """Collects the reference from the first requests, then feeds the three health detectors."""

    def __init__(self, reference_size: int) -> None:
        self.reference_size = reference_size
        self.latency_ref: NumericReference | None = None
        self.tail_s = 0.0
        self.error_rate = 0.0
        self.detectors: HealthDetectors | None = None
        self._pending_lat: list[float] = []
        self._pending_err: list[bool] = []

    def feed(self, chunk: Sequence[Observation], arl: float) -> list[Alarm]:
        if not chunk:
            return []
        _, _, latency_s, error, at = zip(*chunk, strict=True)
        errors = np.asarray(error, dtype=bool)
        err_times = np.asarray(at, dtype=np.float64)
        lat = np.asarray(latency_s, dtype=np.float64)[~errors]
        lat_times = err_times[~errors]
        if self.detectors is None:
            self._collect(lat, errors, arl)
            return []
        d, ref = self.detectors, self.latency_ref
        assert ref is not None  # set with the detectors
        alarms = d.latency.feed(standardize(log_latency(lat), ref), lat_times)
        alarms += d.tail.feed(lat > self.tail_s, lat_times)
        alarms += d.errors.feed(errors, err_times)
        return alarms

    def _collect(self, lat: np.ndarray, errors: np.ndarray, arl: float) -> None:
        self._pending_lat += lat.tolist()
        self._pending_err += errors.tolist()
        if len(self._pending_err) < self.reference_size or len(self._pending_lat) < MIN_LATENCY_SAMPLES:
            return
        sample = np.asarray(self._pending_lat)
        ref = NumericReference.from_values(log_latency(sample))
        assert ref is not None  # at least MIN_LATENCY_SAMPLES finite logs
        self.latency_ref = ref
        self.tail_s, tail_p0 = tail_threshold(sample)
        self.error_rate = float(np.mean(self._pending_err))
        self.detectors = HealthDetectors(
            latency_stream(ref, arl),
            rate_stream("latency", "latency", "latency_tail", tail_p0, TAIL_LIFT * tail_p0, arl),
            rate_stream(
                "errors",
                "errors",
                "errors",
                self.error_rate,
                ERROR_LIFT * max(self.error_rate, MIN_RATE),
                arl,
            ),
        )
        self._pending_lat, self._pending_err = [], []
