"""A version's latency, errors and client errors under watch, each against its own live baseline.

Latency follows load, so no reference taken once (a profile, the first requests) is the service's normal
for long: the detectors of ``sluice.monitoring.live`` learn the baseline from the stream and keep
tracking it. Four streams:

| stream | detector | alarms on |
| --- | --- | --- |
| log latency of successes | ``LatencyShift`` (block medians) | a heavier version, a saturated core |
| latency above the live p99 | ``TailShift`` (capped block counts) | a heavier tail (2 % +200 ms) |
| 1 for a 5xx (the version's), 0 for a 200 | ``LiveRate``, p0 -> ``ERROR_LIFT`` p0 | an error burst, a creep |
| 1 for a 4xx (the client's), else 0 | ``LiveRate``, p0 -> ``client_p1(p0)`` | a broken client, new schema |

Client errors never count against the model (they are not in the latency or error streams, nor the
rollout gates); their own stream makes a sudden rise an incident of kind ``client_errors``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from sluice.monitoring.layout import Observation
from sluice.monitoring.live import LatencyShift, LiveRate, TailShift
from sluice.monitoring.streams import ERROR_LIFT, MIN_RATE, Alarm, Stream, log_latency

#: A client-error share is watched for a rise to this many times its baseline, and at least this far
#: above it (a baseline of 0 % is common: 5 % of requests answered 4xx is then an incident).
CLIENT_LIFT = 3.0
CLIENT_RISE = 0.05


#: The tail detector's run length is this many times the budget's: its over-dispersion correction is an
#: estimate, and a shared machine's bursts still cost it 1.3 false alarms per 100k at 1x (0 at 5x; the
#: synthetic S6 tail's median delay 199 -> about 250 requests).
TAIL_ARL_FACTOR = 5.0


def client_p1(p0: float) -> float:
    """The client-error rate watched for, from its baseline ``p0``.

    >>> round(client_p1(0.001), 3), round(client_p1(0.1), 3)
    (0.051, 0.3)
    """
    return min(max(CLIENT_LIFT * p0, p0 + CLIENT_RISE), 0.99)


def error_p1(p0: float) -> float:
    return ERROR_LIFT * max(p0, MIN_RATE)


@dataclass(eq=False)
class HealthDetectors:
    """Latency level, latency tail, the version's errors and the clients' errors."""

    latency: Stream
    tail: Stream
    errors: Stream
    client_errors: Stream

    @classmethod
    def planned(cls) -> int:
        """How many detectors ``HealthWatch`` builds: one per field."""
        return len(fields(cls))

    @classmethod
    def build(cls, arl: float, reference_size: int) -> HealthDetectors:
        memory = max(10 * reference_size, 20_000)
        return cls(
            Stream("latency", "latency", "latency", LatencyShift()),
            Stream("latency", "latency", "latency_tail", TailShift(target_arl=TAIL_ARL_FACTOR * arl)),
            Stream(
                "errors",
                "errors",
                "errors",
                LiveRate(error_p1, arl, memory=memory, warmup=reference_size, floor=MIN_RATE),
            ),
            Stream(
                "client_errors",
                "client_errors",
                "client_errors",
                LiveRate(client_p1, arl, memory=memory, warmup=reference_size, floor=MIN_RATE),
            ),
        )

    def streams(self) -> list[Stream]:
        return [self.latency, self.tail, self.errors, self.client_errors]


class HealthWatch:
    """Feeds the four health streams; each learns its own baseline from the requests it sees."""

    def __init__(self, reference_size: int) -> None:
        self.reference_size = reference_size
        self.detectors: HealthDetectors | None = None

    def feed(self, chunk: Sequence[Observation], arl: float) -> list[Alarm]:
        if not chunk:
            return []
        if self.detectors is None:
            self.detectors = HealthDetectors.build(arl, self.reference_size)
        d = self.detectors
        latency_s = np.fromiter((o.latency_s for o in chunk), np.float64, len(chunk))
        errors = np.fromiter((o.error for o in chunk), bool, len(chunk))
        client = np.fromiter((o.client_error for o in chunk), bool, len(chunk))
        at = np.fromiter((o.at for o in chunk), np.float64, len(chunk))
        alarms: list[Alarm] = []
        ok = ~errors & ~client
        if ok.any():
            lat, times = latency_s[ok], at[ok]
            alarms += d.latency.feed(log_latency(lat), times)
            alarms += d.tail.feed(lat, times)
        if client.all():
            return alarms + d.client_errors.feed(client, at)
        served = ~client
        alarms += d.errors.feed(errors[served], at[served])
        alarms += d.client_errors.feed(client, at)
        return alarms

    def snapshot(self, detectors: Any) -> dict[str, Any]:
        """The ``latency``, ``errors`` and ``client_errors`` parts of the monitoring endpoint's answer;
        ``detectors`` renders a list of streams."""
        d = self.detectors
        if d is None:
            return {
                "latency": {"reference": None, "detectors": []},
                "errors": {"reference_rate": None, "detectors": []},
                "client_errors": {"reference_rate": None, "detectors": []},
            }
        shift, tail = d.latency.detector, d.tail.detector
        assert isinstance(shift, LatencyShift) and isinstance(tail, TailShift)
        learnt = shift.blocks > shift.warmup
        rates = {}
        for name, stream in (("errors", d.errors), ("client_errors", d.client_errors)):
            live = stream.detector
            assert isinstance(live, LiveRate)
            rates[name] = {
                "reference_rate": round(live.rate, 6) if live.cusum is not None else None,
                "detectors": detectors([stream]),
            }
        return {
            "latency": {
                "reference": {
                    "from": "live",
                    "median_s": round(float(np.exp(shift.baseline)), 6) if learnt else None,
                    "p99_s": round(tail.p99, 6) if np.isfinite(tail.p99) else None,
                },
                "detectors": detectors([d.latency, d.tail]),
            },
            **rates,
        }
