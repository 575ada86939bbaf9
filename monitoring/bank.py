"""The armed numeric features of a version, fed together: one matrix per chunk, one pass per detector side.

Per feature, a chunk costs a few numpy calls whatever its rows; with 32 features and chunks of 32 rows
that overhead was most of the monitor's time. So the armed numeric features are banked: their columns
become one matrix, standardised at once, and their mean CUSUMs (then their variance CUSUMs) are updated
as one ``CUSUMBank``. Their windows wait for ``WINDOW_BLOCK_ROWS`` rows (``WindowBlocks``) for the same
reason.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from sluice.monitoring.cusum import CUSUM, CUSUMBank
from sluice.monitoring.features import FeatureWatch, NumericDetectors
from sluice.monitoring.reference import NumericReference
from sluice.monitoring.streams import Z_CLIP, Alarm, Stream, squared

#: Numeric feature rows held before their windows are updated.
WINDOW_BLOCK_ROWS = 256


class NumericBank:
    """What one set of armed numeric features shares chunk after chunk: references and detector banks."""

    def __init__(self, watches: list[FeatureWatch]) -> None:
        refs = [w.reference for w in watches if isinstance(w.reference, NumericReference)]
        detectors = [w.detectors for w in watches if isinstance(w.detectors, NumericDetectors)]
        if len(refs) != len(watches) or len(detectors) != len(watches):
            raise ValueError("a numeric bank takes armed numeric features only")
        self.watches = watches
        self.key = self.key_of(watches)
        self.means = np.array([r.mean for r in refs])
        self.stds = np.array([r.std for r in refs])
        #: The mean side (fed z) and the variance side (fed z**2), one stream per feature each.
        self.sides: tuple[list[Stream], list[Stream]] = (
            [d.mean for d in detectors],
            [d.variance for d in detectors],
        )
        self.cusums = tuple(_cusum_bank(streams) for streams in self.sides)
        sources = {w.source.input for w in watches}
        cols = [w.source.column for w in watches]
        known = [c for c in cols if c is not None]
        # One input and known columns (the usual 2-D tensor): the matrix is one indexing of it.
        self._take = (sources.pop(), known) if len(sources) == 1 and len(known) == len(cols) else None

    @staticmethod
    def key_of(watches: list[FeatureWatch]) -> tuple[int, ...]:
        """Which armed detectors a bank is built on: a new bank when a feature is armed in between."""
        return tuple(id(w.detectors) for w in watches)

    def matrix(self, columns: dict[str, np.ndarray], values: list[np.ndarray]) -> np.ndarray:
        """The chunk's rows x features matrix (``values``: each feature's column, in bank order)."""
        if self._take is not None:
            name, take = self._take
            data = columns[name]
            if data.ndim == 2:
                return np.asarray(data[:, take], dtype=np.float64)
        return np.column_stack(values).astype(np.float64, copy=False)

    def feed(self, x: np.ndarray, times: np.ndarray) -> Iterator[list[Alarm]]:
        """Update both sides with the finite matrix ``x``: the mean side's alarms, then the variance's."""
        z = np.clip((x - self.means) / self.stds, -Z_CLIP, Z_CLIP)
        n = len(times)
        for streams, cusums, values in zip(self.sides, self.cusums, (z, squared(z)), strict=True):
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


def _cusum_bank(streams: list[Stream]) -> CUSUMBank | None:
    detectors = [s.detector for s in streams if isinstance(s.detector, CUSUM)]
    return CUSUMBank(detectors) if len(detectors) == len(streams) else None


class WindowBlocks:
    """Banked rows held for their features' windows, handed over in blocks (a snapshot flushes them)."""

    def __init__(self) -> None:
        self._held: list[tuple[list[FeatureWatch], np.ndarray]] = []
        self.pending = 0

    def hold(self, watches: list[FeatureWatch], x: np.ndarray) -> None:
        self._held.append((watches, x))
        self.pending += len(x)

    @property
    def full(self) -> bool:
        return self.pending >= WINDOW_BLOCK_ROWS

    def flush(self, per_step: int = 8) -> Iterator[list[Alarm]]:
        """Hand the held rows to their windows, ``per_step`` features per step (no alarms)."""
        held, self._held, self.pending = self._held, [], 0
        while held:
            watches, x = held[0]
            same = [m for s, m in held if s == watches]
            if len(same) == len(held):
                x = np.concatenate(same)
                held = []
            else:  # a feature armed in between: keep the blocks apart
                held = held[1:]
            for j, watch in enumerate(watches):
                if watch.window is not None:
                    watch.window.add_values(x[:, j])
                if j % per_step == per_step - 1:
                    yield []
        yield []
