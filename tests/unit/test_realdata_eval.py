"""The real-data evaluation runs (datasets shipped with scikit-learn and River, no downloads)."""

from __future__ import annotations

from sluice.monitoring.realdata import SHIFTS, run_shift, run_stable


def test_a_stable_held_out_stream_raises_no_sluice_alarm() -> None:
    families = run_stable("phishing", 5000, seed=0, river_rows=300, width=2)
    ours = {k: v for k, v in families.items() if k.startswith("sluice")}
    assert ours and all(alarms == 0 for alarms, _, _ in ours.values())
    assert {"River ADWIN (defaults) on z", "River KSWIN (defaults) on z"} <= set(families)


def test_a_species_the_reference_never_saw_is_caught_at_once() -> None:
    iris = next(s for s in SHIFTS if s.dataset == "iris")
    delay, before = run_shift(iris, seed=0, width=1)["sluice monitor"]
    assert delay is not None and delay < 50 and before == 0
