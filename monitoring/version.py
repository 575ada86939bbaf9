"""One model version under watch: the features, prediction and health it watches, fed chunk by chunk.

``VersionMonitor.feed`` takes a chunk of observations and returns the alarms raised; it is synchronous and
knows nothing of queues or HTTP, so the background task and the evaluation harness drive the same code.
Where the manifest has a reference profile the features and the prediction are watched from the first
request; otherwise (and always for latency and errors) the first ``reference_size`` rows or requests
become the reference and the detectors start after them, which the snapshot says.

What each part watches and how is in its own module: ``features`` (one feature's detectors), ``bank``
(the armed numeric features fed together), ``prediction`` and ``health`` (latency and errors).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from sluice.converters.artifact.profile import CategoricalFeature, NumericFeature, Profile
from sluice.monitoring.bank import NumericBank, WindowBlocks
from sluice.monitoring.calibration import per_detector_arl
from sluice.monitoring.features import CategoricalDetectors, FeatureWatch, NumericDetectors, as_text
from sluice.monitoring.health import HealthDetectors, HealthWatch
from sluice.monitoring.layout import Layout, Observation, WatchOptions
from sluice.monitoring.prediction import Predictions, PredictionWatch
from sluice.monitoring.reference import CategoricalReference, NumericReference
from sluice.monitoring.stored import load_calibration
from sluice.monitoring.streams import Alarm, Stream


class VersionMonitor:
    """Streams and detectors of one version, fed in chunks by one thread at a time."""

    def __init__(
        self, model: str, version: int, layout: Layout, profile: Profile | None, options: WatchOptions
    ) -> None:
        self.model = model
        self.version = version
        self.layout = layout
        self.options = options
        self.profile = profile
        self.requests = 0
        self.rows = 0
        self.dropped = 0
        self.features = {f.name: FeatureWatch(f) for f in layout.features}
        self.prediction = PredictionWatch(layout)
        self.health = HealthWatch(options.reference_size)
        self._pending: dict[str, list[np.ndarray]] = {}  # reference samples being collected, by signal
        self._started = False
        self._bank: NumericBank | None = None  # for the armed numeric features
        self._windows = WindowBlocks()
        self._arl = 0.0
        #: Where the profile's detectors were calibrated: "conversion" (stored pilots) or "load".
        self.calibrated_at: str | None = None

    # ----- building -----------------------------------------------------------------------------

    def detectors(self) -> int:
        """How many detectors the version's false-alarm budget is split over.

        Fixed before the first request, when references taken from the first requests are not known yet:
        each part says how many detectors it builds (a categorical feature without a profile plans for
        ``MAX_TRACKED_CATEGORIES``, a classifier for every class label).
        """
        profiled = {} if self.profile is None else self.profile.features
        n = 0
        for watch in self.features.values():
            if watch.source.categorical:
                body = profiled.get(watch.source.name)
                known = len(body.categories) if isinstance(body, CategoricalFeature) else 0
                n += CategoricalDetectors.planned(known)
            else:
                n += NumericDetectors.planned(self.options)
        return n + PredictionWatch.planned(self.layout) + HealthDetectors.planned()

    def start(self) -> None:
        """Calibrate what the profile allows (slow: call it off the event loop)."""
        self._started = True
        self._arl = per_detector_arl(self.options.target_false_alarms_per_100k, self.detectors())
        if self.profile is None:
            return
        # Pilots measured at conversion spare the replays (``stored``); else they run now, once per process.
        self.calibrated_at = "conversion" if load_calibration(self.profile) else "load"
        rows = self.profile.rows
        for name, watch in self.features.items():
            body = self.profile.features.get(name)
            if watch.source.categorical and isinstance(body, CategoricalFeature):
                ref = CategoricalReference.from_profile(body, rows)
                watch.arm(ref, "profile", self._arl, self.options)
            elif not watch.source.categorical and isinstance(body, NumericFeature):
                numeric = NumericReference.from_profile(body, rows)
                if numeric is not None:
                    watch.arm(numeric, "profile", self._arl, self.options, missing=body.missing)
        self.prediction.arm_from_profile(self.profile.outputs, rows, self._arl, self.options)

    # ----- feeding ------------------------------------------------------------------------------

    def feed(self, chunk: Sequence[Observation]) -> list[Alarm]:
        """Update every stream with ``chunk``: the alarms raised."""
        alarms: list[Alarm] = []
        for found in self.steps(chunk):
            alarms += found
        return alarms

    def steps(self, chunk: Sequence[Observation]) -> Iterator[list[Alarm]]:
        """``feed`` in steps (health, each feature group, prediction, windows), each step's alarms.

        The background task runs on the event loop and yields to it between steps, so requests never
        wait for more than one step (about a millisecond for a chunk of 32 rows of 32 features).
        """
        if not self._started:
            self.start()
        self.requests += len(chunk)
        yield self.health.feed(chunk, self._arl)
        served = [o for o in chunk if o.inputs is not None and not o.error]
        if not served:
            return
        inputs = [o.inputs for o in served if o.inputs is not None]
        ats = np.asarray([o.at for o in served], dtype=np.float64)
        first = self.layout.features[0].input if self.layout.features else None
        columns: dict[str, np.ndarray] = {}
        counts: list[int] | int = 1
        for source in {f.input for f in self.layout.features}:
            try:
                arrays = [x[source] for x in inputs]
                columns[source] = np.concatenate(arrays)
            except (KeyError, ValueError):
                return
            if source == first:
                counts = [len(a) for a in arrays]
        times = np.repeat(ats, counts)
        self.rows += len(times)
        banked: list[tuple[FeatureWatch, np.ndarray]] = []
        for watch in self.features.values():
            values = watch.values(columns, len(times))
            if isinstance(watch.detectors, NumericDetectors):
                banked.append((watch, values))
            elif watch.reference is None:
                self._collect_feature(watch, values)
                yield []
            else:
                yield watch.feed(values, times)
        if banked:
            yield from self._feed_numeric(banked, columns, times)
        if self.options.watch_missing:
            alarms: list[Alarm] = []
            for watch in self.features.values():
                alarms += watch.feed_missing(columns, times)
            yield alarms
        yield self._feed_prediction(Predictions(served, ats, self.layout))
        if self._windows.full:
            yield from self._windows.flush()

    def _collect(self, key: str, values: np.ndarray) -> np.ndarray | None:
        """Add to a pending reference sample; the whole sample once it is complete."""
        held = self._pending.setdefault(key, [])
        held.append(values)
        if sum(len(v) for v in held) < self.options.reference_size:
            return None
        del self._pending[key]
        return np.concatenate(held)

    def _collect_feature(self, watch: FeatureWatch, values: np.ndarray) -> None:
        """Take a feature's reference from its first rows, and arm it once there are enough."""
        sample = self._collect("feature:" + watch.source.name, values)
        if sample is None:
            return
        if watch.source.categorical:
            ref = CategoricalReference.from_values(as_text(sample))
            watch.arm(ref, "first_requests", self._arl, self.options)
            return
        floats = sample.astype(np.float64)
        numeric = NumericReference.from_values(floats)
        if numeric is not None:
            missing = float(np.isnan(floats).mean())
            watch.arm(numeric, "first_requests", self._arl, self.options, missing=missing)

    def _feed_numeric(
        self,
        banked: list[tuple[FeatureWatch, np.ndarray]],
        columns: dict[str, np.ndarray],
        times: np.ndarray,
    ) -> Iterator[list[Alarm]]:
        """Every armed numeric feature at once (``bank``); their rows are held for their windows.

        A chunk with a non-finite value goes feature by feature (those rows are skipped per feature).
        """
        watches = [watch for watch, _ in banked]
        if self._bank is None or self._bank.key != NumericBank.key_of(watches):
            self._bank = NumericBank(watches)
        x = self._bank.matrix(columns, [values for _, values in banked])
        if not np.isfinite(x).all():
            for watch, values in banked:
                yield watch.feed(values, times)
            return
        yield from self._bank.feed(x, times)
        # Windows cost a few numpy calls per feature whatever the rows: for small chunks that was half the
        # monitor's time, so their rows wait for a block (a snapshot flushes them first).
        self._windows.hold(watches, x)

    def _feed_prediction(self, got: Predictions) -> list[Alarm]:
        """Feed what is armed; take what has no reference yet (score, classes) from the first rows."""
        watch = self.prediction
        profiled = watch.reference_from == "profile"
        ref_score = ref_shares = None
        rows = 0
        if got.score is not None and watch.wants_score:
            sample = self._collect("score", got.score)
            if sample is not None:
                ref_score = NumericReference.from_values(sample)
        if got.label is not None and watch.wants_classes and not profiled:
            labels = self._collect("label", got.label)
            if labels is not None:
                classes = CategoricalReference.from_values(labels)
                ref_shares, rows = classes.shares, classes.rows
        alarms = watch.feed(got)
        if ref_score is not None or ref_shares is not None:
            watch.arm(ref_score, ref_shares, watch.reference_from, self._arl, self.options, rows)
        return alarms

    # ----- reading ------------------------------------------------------------------------------

    def streams(self) -> list[Stream]:
        out = [s for f in self.features.values() for s in f.streams()]
        health = [] if self.health.detectors is None else self.health.detectors.streams()
        return out + self.prediction.streams() + health

    def snapshot(self, mono_now: float, wall_now: float | None = None) -> dict[str, Any]:
        for _ in self._windows.flush():
            pass
        wall_now = time.time() if wall_now is None else wall_now

        def when(at: float) -> str:
            wall = wall_now - (mono_now - at)
            return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall)) + f".{int(wall % 1 * 1000):03d}Z"

        def detectors(streams: list[Stream]) -> list[dict[str, Any]]:
            out = []
            for s in streams:
                body = s.state()
                body["last_alarms"] = [
                    {"sample": n, "time": when(at), "seconds_ago": round(mono_now - at, 3)}
                    for n, at in s.last_alarms
                ]
                out.append(body)
            return out

        features: dict[str, Any] = {}
        for name, watch in self.features.items():
            pending = sum(len(v) for v in self._pending.get("feature:" + name, []))
            features[name] = {
                "type": "categorical" if watch.source.categorical else "numeric",
                "reference_from": watch.reference_from if watch.reference is not None else "collecting",
                "reference": None if watch.reference is None else watch.reference.to_json(),
                "reference_rows_collected": None if watch.reference is not None else pending,
                "current": None if watch.window is None else watch.window.to_json(),
                "detectors": detectors(watch.streams()),
                "alarms": sum(s.alarms for s in watch.streams()),
            }
        p, h = self.prediction, self.health
        prediction_from = p.reference_from if p.streams() else "collecting"
        return {
            "model": self.model,
            "version": str(self.version),
            "observed": {"requests": self.requests, "rows": self.rows, "dropped": self.dropped},
            "options": {
                "sample_rate": self.options.sample_rate,
                "target_false_alarms_per_100k": self.options.target_false_alarms_per_100k,
                "reference_size": self.options.reference_size,
                "window_rows": self.options.window_rows,
                "per_detector_run_length": round(self._arl),
                "calibrated_at": self.calibrated_at,
            },
            "reference": {
                "features": sorted({f["reference_from"] for f in features.values()}),
                "prediction": prediction_from,
                "latency_and_errors": "live",
            },
            "features": features,
            "prediction": {
                "reference_from": prediction_from,
                "score_reference_from": p.score_from if p.score_ref is not None else None,
                "reference": {
                    "score": None if p.score_ref is None else p.score_ref.to_json(),
                    "class_shares": p.class_shares,
                },
                "current": None if p.window is None else p.window.to_json(),
                "detectors": detectors(p.streams()),
            },
            **h.snapshot(detectors),
        }
