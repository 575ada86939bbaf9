"""Calibrations measured once, at conversion, stored in the reference profile and trusted at load.

Calibrating a version's detectors replays its reference (about 50 ms per numeric feature): a repository
of 14 models spent most of its 50 s start-up there. The replay depends only on the profile and on the
detectors' design (allowances, clipping, pilot run lengths), not on the false-alarm budget: its result is
a ``Pilot`` per stream, from which any target gets its threshold in closed form. So ``sluice convert``
stores the pilots in the profile's ``calibration`` object, keyed by the design settings that shaped them
(``calibration_key``); the gateway seeds its calibration cache from them (``load_calibration``), and
replays at load only what is missing or was measured under other settings.

    >>> import numpy as np
    >>> from sluice.converters.artifact.profile import Histogram, NumericFeature, Profile
    >>> x = np.random.default_rng(0).normal(size=1000)
    >>> feature = NumericFeature(mean=float(x.mean()), std=float(x.std()), histogram=Histogram.of(x, 10))
    >>> profile = Profile({"x": feature}, rows=1000)
    >>> stored = calibrate_profile(profile)
    >>> sorted(stored["features"]["x"]), load_calibration(Profile(profile.features, calibration=stored))
    (['mean', 'variance'], True)
"""

from __future__ import annotations

import json
from typing import Any

from sluice.converters.artifact.profile import ClassifierOutputs, NumericFeature, Profile, RegressorOutputs
from sluice.monitoring.calibration import MARGIN, PILOT_ALARMS, PILOT_ARLS, Pilot
from sluice.monitoring.reference import NumericReference
from sluice.monitoring.streams import (
    MEAN_K,
    VARIANCE_CLIP,
    VARIANCE_K,
    Z_CLIP,
    mean_pilot,
    seed_pilots,
    variance_pilot,
)

#: Bumped when the replay itself changes (what is drawn, how alarms are counted).
METHOD = 1


def calibration_key() -> dict[str, Any]:
    """The settings stored pilots were measured under (as JSON reads them back)."""
    key = {
        "method": METHOD,
        "mean_k": MEAN_K,
        "variance_k": VARIANCE_K,
        "z_clip": Z_CLIP,
        "variance_clip": VARIANCE_CLIP,
        "pilot_arls": list(PILOT_ARLS),
        "pilot_alarms": PILOT_ALARMS,
        "margin": MARGIN,
    }
    normalised: dict[str, Any] = json.loads(json.dumps(key))
    return normalised


def _references(profile: Profile) -> tuple[dict[str, NumericReference], NumericReference | None]:
    features = {}
    for name, body in profile.features.items():
        if isinstance(body, NumericFeature):
            ref = NumericReference.from_profile(body, profile.rows)
            if ref is not None:
                features[name] = ref
    outputs, summary = profile.outputs, None
    if isinstance(outputs, ClassifierOutputs):
        summary = outputs.score_summary
    elif isinstance(outputs, RegressorOutputs):
        summary = outputs.value
    score = None if summary is None else NumericReference.from_summary(summary, profile.rows)
    return features, score


def calibrate_profile(profile: Profile) -> dict[str, Any]:
    """The pilots of every numeric feature (mean, variance) and of the score (mean), with their key."""
    features, score = _references(profile)
    return {
        "key": calibration_key(),
        "features": {
            name: {"mean": mean_pilot(ref).to_json(), "variance": variance_pilot(ref).to_json()}
            for name, ref in features.items()
        },
        "score": None if score is None else {"mean": mean_pilot(score).to_json()},
    }


def load_calibration(profile: Profile) -> bool:
    """Seed the calibration cache from ``profile``'s stored pilots; False when it has none usable (no
    calibration, another key, a malformed one): the detectors then replay at load, as before."""
    stored = profile.calibration
    if not stored or stored.get("key") != calibration_key():
        return False
    features, score = _references(profile)
    try:
        found = stored.get("features") or {}
        for name, ref in features.items():
            pilots = found.get(name)
            if pilots:
                seed_pilots(ref, Pilot.from_json(pilots["mean"]), Pilot.from_json(pilots["variance"]))
        if score is not None and stored.get("score"):
            seed_pilots(score, Pilot.from_json(stored["score"]["mean"]), None)
    except (KeyError, TypeError, ValueError, AttributeError):
        return False
    return True
