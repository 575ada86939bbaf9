"""One model version under watch: its layout, references, derived streams, windows and detectors.

``VersionMonitor.feed`` takes a chunk of observations and returns the alarms raised; it is synchronous and
knows nothing of queues or HTTP, so the background task and the evaluation harness drive the same code.
Where the manifest has a reference profile the features and the prediction are watched from the first
request; otherwise (and always for latency and errors) the first ``reference_size`` rows or requests
become the reference and the detectors start after them, which the snapshot says.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import numpy as np

from sluice.monitoring.calibration import per_detector_arl
from sluice.monitoring.cusum import CUSUM, CUSUMBank
from sluice.monitoring.layout import FeatureSource, Layout, Observation, WatchOptions, row_scores
from sluice.monitoring.reference import CategoricalReference, NumericReference
from sluice.monitoring.streams import (
    TAIL_LIFT,
    UNSEEN_P1,
    Z_CLIP,
    Alarm,
    Stream,
    latency_stream,
    log_latency,
    mean_stream,
    rate_stream,
    share_p1,
    standardize,
    tail_threshold,
    variance_stream,
)
from sluice.monitoring.windows import Window

#: Categories of one feature watched one by one (the most frequent); the rest only through "unseen".
MAX_TRACKED_CATEGORIES = 10
_NO_OUTPUTS: dict[str, np.ndarray] = {}


#: Numeric feature rows held before their windows are updated (see VersionMonitor._feed_numeric).
WINDOW_BLOCK_ROWS = 256


@dataclass(eq=False)
class FeatureState:
    source: FeatureSource
    reference: NumericReference | CategoricalReference | None = None
    reference_from: str = "first_requests"
    streams: list[Stream] = field(default_factory=list)
    window: Window | None = None
    categories: list[str] = field(default_factory=list)
    #: Each known category's bin: its index in ``categories``, or ``len(categories)`` for the others.
    bins: dict[str, int] = field(default_factory=dict)
    #: The missing-value (NaN) share's detector, when the version accepts NaN (``watch_missing``).
    missing: Stream | None = None

    def all_streams(self) -> list[Stream]:
        return self.streams if self.missing is None else [*self.streams, self.missing]


def _gather(chunk: Sequence[Observation], ats: np.ndarray, output: str) -> tuple[list[Any], np.ndarray]:
    """The observations' arrays for ``output`` (where they have it) and the times (``ats``) they came at."""
    got = [(o.outputs or _NO_OUTPUTS).get(output) for o in chunk]
    has = [a is not None for a in got]
    if all(has):
        return got, ats
    return [a for a in got if a is not None], ats[has]


def _joined(arrays: list[Any], convert: Callable[[Any], np.ndarray]) -> np.ndarray:
    """``convert`` (row by row) applied to the arrays joined: once for the chunk, not once per request."""
    try:
        joined = np.concatenate(arrays)
    except (ValueError, TypeError):  # shapes or types that differ between requests
        return np.concatenate([convert(a) for a in arrays])
    return convert(joined)


def _text(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind in "SO":
        return np.array(
            [v.decode() if isinstance(v, bytes) else str(v) for v in values.ravel()], dtype=object
        )
    return values.ravel().astype(str)


class _NumericBank:
    """What one set of armed numeric features shares chunk after chunk: references and detector banks."""

    def __init__(self, states: list[FeatureState]) -> None:
        refs = [s.reference for s in states if isinstance(s.reference, NumericReference)]
        self.means = np.array([r.mean for r in refs])
        self.stds = np.array([r.std for r in refs])
        self.streams = [[s.streams[side] for s in states] for side in (0, 1)]
        self.cusums: list[CUSUMBank | None] = []
        for streams in self.streams:
            detectors = [s.detector for s in streams if isinstance(s.detector, CUSUM)]
            self.cusums.append(CUSUMBank(detectors) if len(detectors) == len(streams) else None)
        sources = {s.source.input for s in states}
        cols = [s.source.column for s in states]
        known = [c for c in cols if c is not None]
        # One input and known columns (the usual 2-D tensor): the matrix is one indexing of it.
        self._take = (sources.pop(), known) if len(sources) == 1 and len(known) == len(cols) else None

    def matrix(
        self, columns: dict[str, np.ndarray], banked: list[tuple[FeatureState, np.ndarray]]
    ) -> np.ndarray:
        if self._take is not None:
            name, take = self._take
            data = columns[name]
            if data.ndim == 2:
                return np.asarray(data[:, take], dtype=np.float64)
        return np.column_stack([values for _, values in banked]).astype(np.float64, copy=False)


class VersionMonitor:
    """Streams and detectors of one version, fed in chunks by one thread at a time."""

    def __init__(
        self, model: str, version: int, layout: Layout, profile: dict[str, Any] | None, options: WatchOptions
    ) -> None:
        self.model = model
        self.version = version
        self.layout = layout
        self.options = options
        self.profile = profile
        self.requests = 0
        self.rows = 0
        self.dropped = 0
        self.features = {f.name: FeatureState(f) for f in layout.features}
        self.prediction: list[Stream] = []
        self.score_ref: NumericReference | None = None
        self.class_shares: dict[str, float] | None = None
        self.prediction_from = "first_requests"
        self.score_window: Window | None = None
        self.health: list[Stream] = []
        self.latency_ref: NumericReference | None = None
        self.tail_s = 0.0
        self.error_rate = 0.0
        self._pending: dict[str, list[np.ndarray]] = {}
        self._pending_lat: list[float] = []
        self._pending_err: list[bool] = []
        self._started = False
        # Numeric feature rows waiting for their windows: added in blocks, not per chunk (see _feed_numeric).
        self._window_rows: list[tuple[list[FeatureState], np.ndarray]] = []
        self._bank: tuple[tuple[int, ...], _NumericBank] | None = None  # for the armed numeric features
        self._window_pending = 0
        self._arl = 0.0

    # ----- building -----------------------------------------------------------------------------

    def detectors(self) -> int:
        """How many detectors the version's false-alarm budget is split over."""
        return self._budget()

    def _budget(self) -> int:
        n = 0
        profiled = (self.profile or {}).get("features", {})
        for f in self.layout.features:
            if f.categorical:
                known = len(profiled.get(f.name, {}).get("categories", {})) or MAX_TRACKED_CATEGORIES
                n += min(known, MAX_TRACKED_CATEGORIES) + 1
            else:
                n += 3 if self.options.watch_missing else 2
        n += 1 if self.layout.score_output else 0
        n += len(self.layout.class_labels) if self.layout.label_output else 0
        return n + 3  # latency, latency tail, errors

    def start(self) -> None:
        """Calibrate what the profile allows (slow: call it off the event loop)."""
        self._started = True
        self._arl = per_detector_arl(self.options.target_false_alarms_per_100k, self._budget())
        profile = self.profile or {}
        for name, state in self.features.items():
            body = profile.get("features", {}).get(name)
            if body is None:
                continue
            if state.source.categorical and body.get("type") == "categorical":
                self._arm_feature(state, CategoricalReference.from_profile(body), "profile")
            elif not state.source.categorical and body.get("type", "numeric") == "numeric":
                ref = NumericReference.from_profile(body)
                if ref is not None:
                    self._arm_feature(state, ref, "profile", missing=float(body.get("missing") or 0.0))
        outputs = profile.get("outputs") or {}
        quantiles = outputs.get("score_quantiles") or (outputs.get("value") or {}).get("quantiles")
        shares = outputs.get("class_shares")
        if quantiles or shares:
            score = None
            if quantiles and self.layout.score_output:
                value = outputs.get("value")
                score = (
                    NumericReference(float(value["mean"]), max(float(value["std"]), 1e-9), value["quantiles"])
                    if value
                    else NumericReference.from_quantiles(quantiles)
                )
            self._arm_prediction(score, shares, "profile")

    def _arm_feature(
        self,
        state: FeatureState,
        ref: NumericReference | CategoricalReference,
        source: str,
        *,
        missing: float = 0.0,
    ) -> None:
        state.reference, state.reference_from = ref, source
        name = state.source.name
        if isinstance(ref, NumericReference):
            state.streams = [
                mean_stream("drift", name, ref, self._arl),
                variance_stream(name, ref, self._arl),
            ]
            state.window = Window.numeric(ref, self.options.window_rows)
            if self.options.watch_missing:
                # The share of NaN rows, watched for a rise like an unseen category's.
                state.missing = rate_stream(
                    "drift", name, "missing", missing, max(UNSEEN_P1, 2.0 * missing), self._arl
                )
        else:
            ranked = sorted(ref.shares.items(), key=lambda kv: -kv[1])[:MAX_TRACKED_CATEGORIES]
            state.categories = [c for c, _ in ranked]
            state.bins = {c: len(ranked) for c in ref.shares} | {c: j for j, c in enumerate(state.categories)}
            state.streams = [
                rate_stream("drift", name, "share", p, share_p1(p), self._arl, detail=c) for c, p in ranked
            ]
            unseen = max(ref.other, 0.0)
            state.streams.append(
                rate_stream("drift", name, "unseen", unseen, max(UNSEEN_P1, 5 * unseen), self._arl)
            )
            known = np.asarray(
                [ref.shares[c] for c in state.categories]
                + [max(1.0 - sum(ref.shares[c] for c in state.categories), 0.0)]
            )
            state.window = Window(np.empty(0), known, self.options.window_rows)

    def _arm_prediction(
        self, score: NumericReference | None, shares: dict[str, float] | None, source: str
    ) -> None:
        self.prediction_from = source
        self.prediction = []
        if score is not None:
            self.score_ref = score
            self.prediction.append(mean_stream("prediction", "prediction", score, self._arl))
            self.score_window = Window.numeric(score, self.options.window_rows)
        if shares and self.layout.label_output:
            self.class_shares = {str(k): float(v) for k, v in shares.items()}
            labels = list(self.class_shares)
            for label in labels:
                p = self.class_shares[label]
                if 0.0 < p < 0.995:
                    self.prediction.append(
                        rate_stream(
                            "prediction", "prediction", "class", p, share_p1(p), self._arl, detail=label
                        )
                    )

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
        yield self._feed_health(chunk)
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
        banked: list[tuple[FeatureState, np.ndarray]] = []
        for state in self.features.values():
            src = state.source
            data = columns[src.input]
            values = data[:, src.column] if src.column is not None else data.reshape(len(times), -1)[:, 0]
            if isinstance(state.reference, NumericReference) and len(state.streams) == 2:
                banked.append((state, values))
            else:
                yield self._feed_feature(state, values, times)
        if banked:
            yield from self._feed_numeric(banked, columns, times)
        if self.options.watch_missing:
            yield self._feed_missing(columns, times)
        yield self._feed_prediction(served, ats)
        if self._window_pending >= WINDOW_BLOCK_ROWS:
            yield from self._flush_windows()

    def _collect(self, key: str, values: np.ndarray) -> np.ndarray | None:
        """Add to a pending reference sample; the whole sample once it is complete."""
        held = self._pending.setdefault(key, [])
        held.append(values)
        if sum(len(v) for v in held) < self.options.reference_size:
            return None
        del self._pending[key]
        return np.concatenate(held)

    def _feed_feature(self, state: FeatureState, values: np.ndarray, times: np.ndarray) -> list[Alarm]:
        if state.reference is None:
            sample = self._collect("feature:" + state.source.name, values)
            if sample is not None:
                if state.source.categorical:
                    self._arm_feature(
                        state, CategoricalReference.from_values(_text(sample)), "first_requests"
                    )
                else:
                    floats = sample.astype(np.float64)
                    numeric = NumericReference.from_values(floats)
                    if numeric is not None:
                        missing = float(np.isnan(floats).mean())
                        self._arm_feature(state, numeric, "first_requests", missing=missing)
            return []
        ref = state.reference
        alarms: list[Alarm] = []
        if isinstance(ref, NumericReference):
            x = values.astype(np.float64, copy=False)
            ok = np.isfinite(x)
            if not ok.all():
                x, times = x[ok], times[ok]
            z = standardize(x, ref)
            alarms += state.streams[0].feed(z, times)
            alarms += state.streams[1].feed(z * z, times)
            if state.window is not None:
                state.window.add_values(x)
            return alarms
        text = _text(values).tolist()
        bins = np.fromiter(map(state.bins.get, text, repeat(-1)), np.int64, len(text))
        unseen = bins < 0
        bins[unseen] = len(state.categories)
        for j, stream in enumerate(state.streams[: len(state.categories)]):
            alarms += stream.feed(bins == j, times)
        alarms += state.streams[-1].feed(unseen, times)
        if state.window is not None:
            state.window.add_bins(bins)
        return alarms

    def _feed_numeric(
        self,
        banked: list[tuple[FeatureState, np.ndarray]],
        columns: dict[str, np.ndarray],
        times: np.ndarray,
    ) -> Iterator[list[Alarm]]:
        """Every armed numeric feature at once: one pass of the mean CUSUMs, one of the variance ones.

        A chunk with a non-finite value goes feature by feature (those rows are skipped per feature).
        """
        key = tuple(id(state.streams[0]) for state, _ in banked)
        if self._bank is None or self._bank[0] != key:
            self._bank = (key, _NumericBank([state for state, _ in banked]))
        bank = self._bank[1]
        x = bank.matrix(columns, banked)
        if not np.isfinite(x).all():
            for state, values in banked:
                yield self._feed_feature(state, values, times)
            return
        z = np.clip((x - bank.means) / bank.stds, -Z_CLIP, Z_CLIP)
        n = len(times)
        for side in (0, 1):
            values = z if side == 0 else z * z
            streams = bank.streams[side]
            cusums = bank.cusums[side]
            alarms: list[Alarm] = []
            if cusums is not None:
                for stream, hits in zip(streams, cusums.update(values), strict=True):
                    if hits.size:
                        alarms += stream.record(hits, times, n)
                    else:
                        stream.samples += n
            else:
                for j, stream in enumerate(streams):
                    alarms += stream.feed(values[:, j], times)
            yield alarms
        # Windows cost a few numpy calls per feature whatever the rows: for small chunks that was half the
        # monitor's time, so their rows wait for a block (a snapshot flushes them first).
        self._window_rows.append(([state for state, _ in banked], x))
        self._window_pending += n

    def _feed_missing(self, columns: dict[str, np.ndarray], times: np.ndarray) -> list[Alarm]:
        """Each armed numeric feature's missing-value indicator (NaN rows)."""
        alarms: list[Alarm] = []
        for state in self.features.values():
            if state.missing is None:
                continue
            src = state.source
            data = columns[src.input]
            values = data[:, src.column] if src.column is not None else data.reshape(len(times), -1)[:, 0]
            alarms += state.missing.feed(np.isnan(values.astype(np.float64, copy=False)), times)
        return alarms

    def _flush_windows(self, per_step: int = 8) -> Iterator[list[Alarm]]:
        """Hand the held rows to their windows, ``per_step`` features per step (no alarms)."""
        held, self._window_rows, self._window_pending = self._window_rows, [], 0
        while held:
            states, x = held[0]
            same = [m for s, m in held if s == states]
            if len(same) == len(held):
                x = np.concatenate(same)
                held = []
            else:  # a feature armed in between: keep the blocks apart
                held = held[1:]
            for j, state in enumerate(states):
                if state.window is not None:
                    state.window.add_values(x[:, j])
                if j % per_step == per_step - 1:
                    yield []
        yield []

    def _feed_prediction(self, served: Sequence[Observation], served_at: np.ndarray) -> list[Alarm]:
        lay = self.layout
        score: np.ndarray | None = None
        label: np.ndarray | None = None
        score_at = label_at = np.empty(0)
        if lay.score_output is not None:
            arrays, ats = _gather(served, served_at, lay.score_output)
            if arrays:
                score = _joined(arrays, self._scores)
                score_at = np.repeat(ats, [len(a) for a in arrays])
        if lay.label_output is not None:
            arrays, ats = _gather(served, served_at, lay.label_output)
            if arrays:
                arrays = [np.asarray(a) for a in arrays]
                kind = arrays[0].dtype
                if all(a.dtype == kind or (a.dtype.kind in "SUO" and kind.kind in "SUO") for a in arrays):
                    label = _joined(arrays, _text)
                else:  # joined, they would be cast to one type first: True as "1", 1 as "1.0"
                    label = np.concatenate([_text(a) for a in arrays])
                label_at = np.repeat(ats, [a.size for a in arrays])
        if not self.prediction and self.prediction_from == "first_requests":
            ref_score = ref_shares = None
            if score is not None:
                got = self._collect("score", score)
                if got is None:
                    return []
                ref_score = NumericReference.from_values(got)
            if label is not None:
                got_labels = self._collect("label", label)
                if got_labels is not None:
                    ref_shares = CategoricalReference.from_values(got_labels).shares
            if ref_score is not None or ref_shares is not None:
                self._arm_prediction(ref_score, ref_shares, "first_requests")
            return []
        alarms: list[Alarm] = []
        for stream in self.prediction:
            if stream.signal == "score" and score is not None and self.score_ref is not None:
                alarms += stream.feed(standardize(score, self.score_ref), score_at)
            elif stream.signal == "class" and label is not None:
                alarms += stream.feed(label == stream.detail, label_at)
        if self.score_window is not None and score is not None:
            self.score_window.add_values(score)
        return alarms

    def _scores(self, values: Any) -> np.ndarray:
        return row_scores(values, self.layout.score_is_probability)

    def _feed_health(self, chunk: Sequence[Observation]) -> list[Alarm]:
        if not chunk:
            return []
        _, _, latency_s, error, at = zip(*chunk, strict=True)
        errors = np.asarray(error, dtype=bool)
        err_times = np.asarray(at, dtype=np.float64)
        lat = np.asarray(latency_s, dtype=np.float64)[~errors]
        lat_times = err_times[~errors]
        if not self.health:
            self._pending_lat += lat.tolist()
            self._pending_err += errors.tolist()
            if len(self._pending_err) >= self.options.reference_size and len(self._pending_lat) >= 30:
                sample = np.asarray(self._pending_lat)
                self.latency_ref = NumericReference.from_values(log_latency(sample))
                self.tail_s, tail_p0 = tail_threshold(sample)
                self.error_rate = float(np.mean(self._pending_err))
                assert self.latency_ref is not None
                self.health = [
                    latency_stream(self.latency_ref, self._arl),
                    rate_stream(
                        "latency", "latency", "latency_tail", tail_p0, TAIL_LIFT * tail_p0, self._arl
                    ),
                    rate_stream(
                        "errors",
                        "errors",
                        "errors",
                        self.error_rate,
                        5 * max(self.error_rate, 0.001),
                        self._arl,
                    ),
                ]
                self._pending_lat, self._pending_err = [], []
            return []
        assert self.latency_ref is not None
        alarms = self.health[0].feed(standardize(log_latency(lat), self.latency_ref), lat_times)
        alarms += self.health[1].feed(lat > self.tail_s, lat_times)
        alarms += self.health[2].feed(errors, err_times)
        return alarms

    # ----- reading ------------------------------------------------------------------------------

    def streams(self) -> list[Stream]:
        out = [s for f in self.features.values() for s in f.all_streams()]
        return out + self.prediction + self.health

    def snapshot(self, mono_now: float, wall_now: float | None = None) -> dict[str, Any]:
        for _ in self._flush_windows():
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
        for name, st in self.features.items():
            pending = sum(len(v) for v in self._pending.get("feature:" + name, []))
            features[name] = {
                "type": "categorical" if st.source.categorical else "numeric",
                "reference_from": st.reference_from if st.reference is not None else "collecting",
                "reference": None if st.reference is None else st.reference.to_json(),
                "reference_rows_collected": None if st.reference is not None else pending,
                "current": None if st.window is None else st.window.to_json(),
                "detectors": detectors(st.all_streams()),
                "alarms": sum(s.alarms for s in st.all_streams()),
            }
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
            },
            "reference": {
                "features": sorted({f["reference_from"] for f in features.values()}),
                "prediction": self.prediction_from if self.prediction else "collecting",
                "latency_and_errors": "first_requests" if self.health else "collecting",
            },
            "features": features,
            "prediction": {
                "reference_from": self.prediction_from if self.prediction else "collecting",
                "reference": {
                    "score": None if self.score_ref is None else self.score_ref.to_json(),
                    "class_shares": self.class_shares,
                },
                "current": None if self.score_window is None else self.score_window.to_json(),
                "detectors": detectors(self.prediction),
            },
            "latency": {
                "reference": None
                if self.latency_ref is None
                else {
                    "median_s": round(float(np.exp(self.latency_ref.quantiles["0.5"])), 6),
                    "p99_s": round(self.tail_s, 6),
                },
                "detectors": detectors(self.health[:2]),
            },
            "errors": {
                "reference_rate": self.error_rate if self.health else None,
                "detectors": detectors(self.health[2:]),
            },
        }
