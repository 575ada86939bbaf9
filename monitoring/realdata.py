"""Real-data evaluation: datasets that ship inside scikit-learn and River (no downloads), beside River's
own drift detectors on the same streams.

    python -m sluice.monitoring.realdata          # fast: 2 seeds, 20,000-row stable streams
    python -m sluice.monitoring.realdata --full   # docs/monitoring.md's tables: 3 seeds, 100,000 rows

Every dataset is split at random into thirds: a model is fitted on one, the profile is built on another
(the converter's sample, with ``build_profile``: held-out rows, so the scores it records are those the
traffic will get, not the optimistic ones of training rows), and the last is the traffic. *Stable*
streams resample the traffic third: a finite pool, which differs from the reference by both samples'
errors, so the profile says its rows are ``n m / (n + m)`` (references of 30 to 880 rows: wine's 59
rows against a pool of 59 count as 30). *Shifts* are stable for ``PRE`` rows,
then draw from another part of the data: a prior shift (more of one class), a natural split (a class the
reference never held, the other value of a feature). ``VersionMonitor`` (what the gateway runs) is fed
in requests of 10 rows; River's ``ADWIN``, ``PageHinkley`` and ``KSWIN`` (their defaults) watch each
feature's z-score on the same rows. Delay: rows after the change until the first alarm; false alarms:
alarms per 100k rows per detector on stable streams, and before the change in shifts.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TextIO

import numpy as np
from river import datasets as river_datasets
from river import drift

from sluice.monitoring.layout import Layout, Observation, WatchOptions
from sluice.monitoring.version import VersionMonitor

PRE = 1000
POST = 2000
ROWS_PER_REQUEST = 10
#: River detectors watch at most this many features per stream (KSWIN costs 261 us per update): full, fast.
RIVER_FEATURES = (4, 3)


@dataclass
class Data:
    name: str
    x: np.ndarray
    y: np.ndarray


def _river(dataset: Any, name: str) -> Data:
    rows = list(dataset)
    keys = sorted(rows[0][0])
    x = np.asarray([[float(r[0][k]) for k in keys] for r in rows])
    labels = {v: i for i, v in enumerate(sorted({str(r[1]) for r in rows}))}
    return Data(name, x, np.asarray([labels[str(r[1])] for r in rows]))


def load(name: str) -> Data:
    """One of the datasets shipped with scikit-learn or River, as a float matrix and integer labels."""
    from sklearn import datasets

    sklearn_sets: dict[str, Callable[..., Any]] = {
        "breast_cancer": datasets.load_breast_cancer,
        "wine": datasets.load_wine,
        "iris": datasets.load_iris,
        "digits": datasets.load_digits,
    }
    if name in sklearn_sets:
        x, y = sklearn_sets[name](return_X_y=True)
        return Data(name, np.asarray(x, dtype=np.float64), np.asarray(y))
    river_sets: dict[str, Callable[[], Any]] = {
        "phishing": river_datasets.Phishing,
        "bananas": river_datasets.Bananas,
        "image_segments": river_datasets.ImageSegments,
    }
    return _river(river_sets[name](), name)


STABLE = ("breast_cancer", "phishing", "bananas", "image_segments", "wine", "digits")


@dataclass
class Shift:
    """A change from rows where ``before`` holds to rows where ``after`` does (masks over the data)."""

    name: str
    dataset: str
    before: Callable[[Data], np.ndarray]
    after: Callable[[Data], np.ndarray]
    #: Share of the ``after`` rows' class 1 for a prior shift (None: draw them uniformly).
    prior: float | None = None


def _all(d: Data) -> np.ndarray:
    return np.asarray(d.y >= 0)


def _low(d: Data) -> np.ndarray:
    return np.asarray(d.x[:, 0] <= np.median(d.x[:, 0]))


def _high(d: Data) -> np.ndarray:
    return ~_low(d)


SHIFTS = [
    Shift("breast_cancer: malignant 37 % -> 80 % (prior)", "breast_cancer", _all, _all, 0.8),
    Shift("phishing: phishing 45 % -> 80 % (prior)", "phishing", _all, _all, 0.8),
    Shift("iris: a species the reference never saw", "iris", lambda d: d.y < 2, lambda d: d.y == 2),
    Shift("wine: cultivars 0-1 -> cultivar 2", "wine", lambda d: d.y < 2, lambda d: d.y == 2),
    Shift("digits: 0-4 -> 5-9", "digits", lambda d: d.y < 5, lambda d: d.y >= 5),
    Shift("image_segments: 4 classes -> 3 others", "image_segments", lambda d: d.y < 4, lambda d: d.y >= 4),
    Shift("bananas: x0 below its median -> above (natural split)", "bananas", _low, _high),
]  # fmt: skip


class Watched:
    """A reference half turned into what a converter writes (profile, model) and a monitor for it."""

    def __init__(
        self, data: Data, train: np.ndarray, ref: np.ndarray, pool: int, options: WatchOptions
    ) -> None:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        from sluice.converters._profile import build_profile

        x = data.x[ref]
        classes = np.unique(data.y[train])
        self.model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        self.model.fit(data.x[train], data.y[train])
        self.names = [f"f{j}" for j in range(x.shape[1])]
        profile = build_profile(
            x, self.names, labels=self.model.predict(x), scores=self.model.predict_proba(x),
            class_labels=classes.tolist(),
        )  # fmt: skip
        # The traffic resamples a finite pool of ``pool`` rows: the reference differs from it as from a
        # population by its own error and the pool's, as a reference of n * m / (n + m) rows would.
        profile = replace(profile, rows=len(ref) * pool // (len(ref) + pool))
        layout = Layout.from_signature(
            [("x", "FP64", (-1, x.shape[1]), self.names)],
            [("label", "label"), ("probabilities", "probabilities")],
            classes.tolist(),
        )
        self.vm = VersionMonitor("eval", 1, layout, profile, options)
        self.mean = x.mean(axis=0)
        self.std = np.maximum(x.std(axis=0), 1e-9)

    def feed(self, rows: np.ndarray) -> list[int]:
        """Feed ``rows`` in requests: the row index of each alarm on the features or the prediction."""
        labels, probabilities = self.model.predict(rows), self.model.predict_proba(rows)
        n = ROWS_PER_REQUEST
        obs = [
            Observation(
                {"x": rows[i : i + ROWS_PER_REQUEST]},
                {"label": labels[i : i + n], "probabilities": probabilities[i : i + n]},
                0.001, False, float(i),
            )
            for i in range(0, len(rows), ROWS_PER_REQUEST)
        ]  # fmt: skip
        hits: list[int] = []
        for i in range(0, len(obs), 64):
            for alarm in self.vm.feed(obs[i : i + 64]):
                if alarm.stream.kind in ("drift", "prediction"):
                    hits.append(int(alarm.at))
        return hits


RIVALS: dict[str, Callable[[], Any]] = {
    "ADWIN": drift.ADWIN,
    "PageHinkley": drift.PageHinkley,
    "KSWIN": drift.KSWIN,
}


def river_alarms(make: Callable[[], Any], z: np.ndarray) -> list[list[int]]:
    """Alarm indices of one default River detector per column of ``z`` (rows x features)."""
    out = []
    for j in range(z.shape[1]):
        detector = make()
        column = z[:, j].tolist()
        out.append([i for i, v in enumerate(column) if (detector.update(v), detector.drift_detected)[1]])
    return out


def run_stable(name: str, rows: int, seed: int, river_rows: int, width: int) -> dict[str, list[int]]:
    """Alarms and samples per detector family on a stable held-out stream: {family: [alarms, samples,
    detectors]}; River's families on the first ``river_rows`` rows and ``width`` features."""
    data = load(name)
    rng = np.random.default_rng(seed)
    train, ref, held = np.array_split(rng.permutation(len(data.y)), 3)
    watched = Watched(data, train, ref, len(held), WatchOptions())
    stream = data.x[rng.choice(held, rows)]
    watched.feed(stream)
    families: dict[str, list[int]] = {}
    for st in watched.vm.streams():
        if st.kind in ("drift", "prediction"):
            fam = families.setdefault(f"sluice {type(st.detector).__name__} on {st.signal}", [0, 0, 0])
            fam[0], fam[1], fam[2] = fam[0] + st.alarms, fam[1] + st.samples, fam[2] + 1
    z = ((stream[:river_rows] - watched.mean) / watched.std)[:, :width]
    for rival, make in RIVALS.items():
        found = river_alarms(make, z)
        families[f"River {rival} (defaults) on z"] = [sum(map(len, found)), z.size, z.shape[1]]
    return families


def run_shift(shift: Shift, seed: int, width: int) -> dict[str, tuple[int | None, int]]:
    """First alarm after the change (rows) and alarms before it, for sluice and each River detector."""
    data = load(shift.dataset)
    rng = np.random.default_rng(seed)
    before = np.flatnonzero(shift.before(data))
    after = np.flatnonzero(shift.after(data))
    before = rng.permutation(before)
    train, ref, held = np.array_split(before, 3)
    if shift.prior is not None:  # the same rows, class 1 drawn with probability ``prior``
        ones, zeros = held[data.y[held] == 1], held[data.y[held] != 1]
        pick = rng.random(POST) < shift.prior
        post = np.where(pick, rng.choice(ones, POST), rng.choice(zeros, POST))
    else:
        post = rng.choice(after, POST)
    stream = data.x[np.concatenate([rng.choice(held, PRE), post])]
    watched = Watched(data, train, ref, len(held), WatchOptions())
    out: dict[str, tuple[int | None, int]] = {}
    hits = watched.feed(stream)
    out["sluice monitor"] = _first_after(hits)
    z = ((stream - watched.mean) / watched.std)[:, :width]
    for rival, make in RIVALS.items():
        out[f"River {rival}"] = _first_after(sorted(i for col in river_alarms(make, z) for i in col))
    return out


def _first_after(hits: list[int]) -> tuple[int | None, int]:
    later = [h - PRE for h in hits if h >= PRE]
    return (min(later) if later else None), sum(1 for h in hits if h < PRE)


def report(full: bool, out: TextIO = sys.stdout) -> dict[str, Any]:
    seeds, rows, river_rows = (3, 100_000, 10_000) if full else (2, 20_000, 2000)
    width = RIVER_FEATURES[0 if full else 1]
    started = time.perf_counter()
    w = out.write
    w(f"Mode: {'full' if full else 'fast'}; {seeds} seeds; stable streams of {rows:,} held-out rows ")
    w(f"(River's detectors on the first {river_rows:,}, {width} features at most).\n\n")
    totals: dict[str, list[int]] = {}
    for name in STABLE:
        for seed in range(seeds):
            for family, (alarms, samples, count) in run_stable(name, rows, seed, river_rows, width).items():
                t = totals.setdefault(family, [0, 0, 0])
                t[0], t[1], t[2] = t[0] + alarms, t[1] + samples, max(t[2], count)
    w("Stable real data (" + ", ".join(STABLE) + "): false alarms per 100k samples per detector\n\n")
    w("| detector family | alarms | samples | per 100k per detector |\n| --- | ---: | ---: | ---: |\n")
    per_100k = {}
    for family, (alarms, samples, _) in sorted(totals.items()):
        per_100k[family] = alarms / max(samples, 1) * 1e5
        w(f"| {family} | {alarms} | {samples:,} | {per_100k[family]:.2f} |\n")
    w(f"\nShifts: stable for {PRE:,} rows, then {POST:,} changed; delay in rows (median over seeds; "
      "- never), alarms before the change\n\n")  # fmt: skip
    names = ["sluice monitor", *(f"River {r}" for r in RIVALS)]
    w("| shift | " + " | ".join(names) + " |\n| --- |" + " ---: |" * len(names) + "\n")
    shifts = {}
    for shift in SHIFTS:
        runs = [run_shift(shift, seed, width) for seed in range(seeds)]
        cells = []
        for detector in names:
            delays = [r[detector][0] for r in runs]
            caught = [d for d in delays if d is not None]
            early = sum(r[detector][1] for r in runs)
            med = f"{np.median(caught):.0f}" if caught else "-"
            cells.append(f"{med} ({len(caught)}/{seeds}; {early} before)")
        shifts[shift.name] = cells
        w(f"| {shift.name} | " + " | ".join(cells) + " |\n")
    w(f"\n({time.perf_counter() - started:.0f} s)\n")
    return {"stable_per_100k": per_100k, "shifts": shifts}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="3 seeds, 100,000-row stable streams")
    report(parser.parse_args(argv).full)


if __name__ == "__main__":
    main()
