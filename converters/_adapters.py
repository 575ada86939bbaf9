"""Which adapter converts a model: ``adapt`` looks at the object and picks the framework's adapter.

Kept apart from the protocol (``_framework``) so that the adapters, which import the protocol's helpers,
are imported by this module only.
"""

from __future__ import annotations

from typing import Any

from ._framework import FrameworkModel


def adapt(model: Any) -> FrameworkModel:
    """The adapter for ``model``; ``ConversionError`` (from the scikit-learn adapter) if none fits.

    Boosters are recognised by their class's module and name, so neither lightgbm nor xgboost is
    imported for a model that comes from elsewhere.
    """
    if isinstance(model, FrameworkModel):
        return model
    cls = type(model)
    package = cls.__module__.partition(".")[0]
    if package == "lightgbm" and cls.__name__ == "Booster":
        from ._lightgbm import LightGBMBooster

        return LightGBMBooster(model)
    if package == "xgboost" and cls.__name__ == "Booster":
        from ._xgboost import XGBoostBooster

        return XGBoostBooster(model)
    from ._sklearn import SklearnModel

    return SklearnModel(model)
