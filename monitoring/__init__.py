"""sluice's monitoring: Prometheus metrics, and streaming detectors that watch every served version.

``Monitor`` watches versions (one ``VersionMonitor`` each, laid out by a ``Layout`` with ``WatchOptions``)
and turns alarms into incidents; ``Metrics`` is the gateway's Prometheus registry. This package never
imports ``sluice.server``: the gateway hands it observations.
"""

from sluice.monitoring.layout import Layout, Observation, WatchOptions
from sluice.monitoring.metrics import Metrics
from sluice.monitoring.monitor import Monitor
from sluice.monitoring.version import VersionMonitor

__all__ = ["Layout", "Metrics", "Monitor", "Observation", "VersionMonitor", "WatchOptions"]
