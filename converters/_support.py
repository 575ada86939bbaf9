"""What ``sluice convert`` supports: the estimator table, the transformers a Pipeline may hold, the boosters.

One table answers three questions: is this model supported, is it a classifier or a regressor, and what
do we tell a user whose model is not. LightGBM and XGBoost join the table only when their packages and
``onnxmltools`` import; they are registered with skl2onnx so they convert inside a Pipeline too.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from sluice.converters.artifact.errors import ConversionError

#: Optional boosters: (module, class, task, skl2onnx alias). Registered once, when importable.
_BOOSTERS = (
    ("lightgbm", "LGBMClassifier", "classification", "LightGbmLGBMClassifier"),
    ("lightgbm", "LGBMRegressor", "regression", "LightGbmLGBMRegressor"),
    ("xgboost", "XGBClassifier", "classification", "XGBoostXGBClassifier"),
    ("xgboost", "XGBRegressor", "regression", "XGBoostXGBRegressor"),
)


def _sklearn_estimators() -> dict[type, str]:
    from sklearn import ensemble, linear_model, neighbors, neural_network, svm, tree

    classifiers = [
        linear_model.LogisticRegression,
        linear_model.SGDClassifier,
        svm.SVC,
        tree.DecisionTreeClassifier,
        ensemble.RandomForestClassifier,
        ensemble.ExtraTreesClassifier,
        ensemble.GradientBoostingClassifier,
        ensemble.HistGradientBoostingClassifier,
        neighbors.KNeighborsClassifier,
        neural_network.MLPClassifier,
    ]
    regressors = [
        linear_model.LinearRegression,
        linear_model.Ridge,
        linear_model.SGDRegressor,
        svm.SVR,
        tree.DecisionTreeRegressor,
        ensemble.RandomForestRegressor,
        ensemble.ExtraTreesRegressor,
        ensemble.GradientBoostingRegressor,
        ensemble.HistGradientBoostingRegressor,
        neighbors.KNeighborsRegressor,
        neural_network.MLPRegressor,
    ]
    return {c: "classification" for c in classifiers} | {c: "regression" for c in regressors}


def _register_booster(cls: type, task: str, alias: str, module: str) -> None:
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    if module == "lightgbm":
        from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm as converter
    else:
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost as converter
    if task == "classification":
        shapes = calculate_linear_classifier_output_shapes
        options: dict[str, Any] = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    else:
        shapes, options = calculate_linear_regressor_output_shapes, {}
    update_registered_converter(cls, alias, shapes, converter, options=options or None)


@cache
def boosters() -> dict[type, str]:
    """LightGBM/XGBoost estimators importable here (with onnxmltools), registered with skl2onnx."""
    import importlib

    found: dict[type, str] = {}
    try:
        importlib.import_module("onnxmltools")
    except ImportError:
        return found
    for module, name, task, alias in _BOOSTERS:
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        _register_booster(cls, task, alias, module)
        found[cls] = task
    return found


def estimators() -> dict[type, str]:
    """Supported final estimators -> "classification" or "regression"."""
    return _sklearn_estimators() | boosters()


def transformers() -> tuple[type, ...]:
    """Steps a Pipeline (or a ColumnTransformer branch) may hold before its estimator."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler

    return (StandardScaler, MinMaxScaler, SimpleImputer, OneHotEncoder, ColumnTransformer)


def supported_names() -> list[str]:
    """Every supported class name, estimators first, as an unsupported-model error lists them."""
    names = sorted(c.__name__ for c in estimators())
    missing = [f"{n} (pip install sluice-gateway[{m}])" for m, n, _, _ in _BOOSTERS if n not in names]
    return names + missing + sorted(c.__name__ for c in transformers())


def _unsupported(step: Any, where: str) -> ConversionError:
    what = "estimator" if hasattr(step, "fit") else "model object"
    return ConversionError(
        f"unsupported {what} {type(step).__name__}{where}; supported: {', '.join(supported_names())}",
        details={"estimator": type(step).__name__},
    )


def _check_transformer(step: Any, where: str) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    if isinstance(step, str) and step in ("drop", "passthrough"):
        return
    if isinstance(step, Pipeline):
        for name, inner in step.steps:
            _check_transformer(inner, f"{where[:-1]} -> {name!r})" if where else f" (step {name!r})")
        return
    if type(step) not in transformers():
        raise _unsupported(step, where)
    if isinstance(step, ColumnTransformer):
        branches = [(n, t) for n, t, _ in step.transformers]
        if step.remainder not in ("drop", "passthrough"):
            branches.append(("remainder", step.remainder))
        for name, inner in branches:
            _check_transformer(inner, f"{where[:-1]} -> {name!r})" if where else f" (branch {name!r})")


def check(model: Any) -> tuple[str, str, Any]:
    """(task, description, final estimator) of a supported model; ``ConversionError`` naming what is not."""
    from sklearn.pipeline import Pipeline

    table = estimators()
    if isinstance(model, Pipeline):
        steps = [(n, s) for n, s in model.steps if s is not None and s != "passthrough"]
        if not steps:
            raise ConversionError("the Pipeline has no steps to convert")
        for name, step in steps[:-1]:
            _check_transformer(step, f" (Pipeline step {name!r})")
        last_name, final = steps[-1]
        if type(final) not in table:
            raise _unsupported(final, f" (Pipeline step {last_name!r})")
        names = [type(s).__name__ for _, s in steps]
        return table[type(final)], f"Pipeline({', '.join(names)})", final
    if type(model) not in table:
        raise _unsupported(model, "")
    return table[type(model)], type(model).__name__, model


def contains_column_transformer(model: Any) -> bool:
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    steps = [s for _, s in model.steps] if isinstance(model, Pipeline) else [model]
    return any(isinstance(s, ColumnTransformer) for s in steps)
