"""Every row of the converter support matrix: fit, convert, serve through a real gateway, compare over HTTP.

All models go into one repository served by one gateway for the module, so the file stays fast; each
test asks the gateway (v2 JSON, and v1 objects for the mixed-type pipelines) and compares its answer
with the original model's ``predict``/``predict_proba``/``decision_function``.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn import ensemble, linear_model, neighbors, neural_network, svm, tree
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler

from sluice.converters import convert
from sluice.server.settings import load_settings
from tests.conftest import GatewayServer

pytestmark = pytest.mark.integration

ROWS, FEATURES, REQUEST_ROWS = 300, 4, 25
BOOSTERS = {"lightgbm": "lightgbm", "xgboost": "xgboost"}


def _scaled(estimator: Any) -> Any:
    return make_pipeline(StandardScaler(), estimator)


#: kind -> (classifier factory, regressor factory, optional package)
KINDS: dict[str, tuple[Callable[[], Any], Callable[[], Any], str | None]] = {
    "linear": (
        lambda: _scaled(linear_model.LogisticRegression()),
        lambda: linear_model.LinearRegression(),
        None,
    ),
    "ridge": (
        lambda: make_pipeline(MinMaxScaler(), linear_model.LogisticRegression(C=10.0)),
        lambda: make_pipeline(MinMaxScaler(), linear_model.Ridge()),
        None,
    ),
    "sgd": (
        lambda: _scaled(linear_model.SGDClassifier(random_state=0)),
        lambda: _scaled(linear_model.SGDRegressor(random_state=0)),
        None,
    ),
    "svm_linear": (
        lambda: _scaled(svm.SVC(kernel="linear")),
        lambda: _scaled(svm.SVR(kernel="linear")),
        None,
    ),
    "svm_rbf": (
        lambda: _scaled(svm.SVC(kernel="rbf")),
        lambda: _scaled(svm.SVR(kernel="rbf", C=100.0)),
        None,
    ),
    "decision_tree": (
        lambda: tree.DecisionTreeClassifier(max_depth=5, random_state=0),
        lambda: tree.DecisionTreeRegressor(max_depth=5, random_state=0),
        None,
    ),
    "random_forest": (
        lambda: ensemble.RandomForestClassifier(n_estimators=10, max_depth=6, random_state=0),
        lambda: ensemble.RandomForestRegressor(n_estimators=10, max_depth=6, random_state=0),
        None,
    ),
    "extra_trees": (
        lambda: ensemble.ExtraTreesClassifier(n_estimators=10, max_depth=6, random_state=0),
        lambda: ensemble.ExtraTreesRegressor(n_estimators=10, max_depth=6, random_state=0),
        None,
    ),
    "gradient_boosting": (
        lambda: ensemble.GradientBoostingClassifier(n_estimators=15, random_state=0),
        lambda: ensemble.GradientBoostingRegressor(n_estimators=15, random_state=0),
        None,
    ),
    "hist_gradient_boosting": (
        lambda: ensemble.HistGradientBoostingClassifier(max_iter=15, random_state=0),
        lambda: ensemble.HistGradientBoostingRegressor(max_iter=15, random_state=0),
        None,
    ),
    "knn": (
        lambda: _scaled(neighbors.KNeighborsClassifier()),
        lambda: _scaled(neighbors.KNeighborsRegressor()),
        None,
    ),
    "mlp": (
        lambda: _scaled(neural_network.MLPClassifier(hidden_layer_sizes=(8,), max_iter=200, random_state=0)),
        lambda: _scaled(neural_network.MLPRegressor(hidden_layer_sizes=(8,), max_iter=200, random_state=0)),
        None,
    ),
    "lightgbm": (
        lambda: _booster("lightgbm", "LGBMClassifier"),
        lambda: _booster("lightgbm", "LGBMRegressor"),
        "lightgbm",
    ),
    "xgboost": (
        lambda: _booster("xgboost", "XGBClassifier"),
        lambda: _booster("xgboost", "XGBRegressor"),
        "xgboost",
    ),
}


def _booster(module: str, name: str) -> Any:
    cls = getattr(importlib.import_module(module), name)
    extra = {"verbose": -1} if module == "lightgbm" else {}
    return cls(n_estimators=15, max_depth=4, random_state=0, **extra)


#: Boosters trained with their own API and saved to their own files: framework -> file suffix.
BOOSTER_FILES = {"lightgbm": ".txt", "xgboost": ".json"}


def _save_booster(framework: str, task: str, x: np.ndarray, y: np.ndarray, path: Path) -> Path:
    module = importlib.import_module(framework)
    if framework == "lightgbm":
        objective = {"binary": "binary", "multiclass": "multiclass", "regressor": "regression"}[task]
        params: dict[str, Any] = {"objective": objective, "num_leaves": 15, "verbose": -1}
        booster = module.train(
            params | ({"num_class": 3} if task == "multiclass" else {}), module.Dataset(x, y), 15
        )
    else:
        objective = {
            "binary": "binary:logistic",
            "multiclass": "multi:softprob",
            "regressor": "reg:squarederror",
        }[task]
        params = {"objective": objective, "max_depth": 4}
        booster = module.train(
            params | ({"num_class": 3} if task == "multiclass" else {}), module.DMatrix(x, y), 15
        )
    booster.save_model(path)
    return path


def _load_booster(framework: str, path: Path) -> Any:
    return importlib.import_module(framework).Booster(model_file=str(path))


def _booster_predict(framework: str, path: Path, x: np.ndarray) -> np.ndarray:
    booster = _load_booster(framework, path)
    if framework == "xgboost":
        return np.asarray(booster.predict(importlib.import_module("xgboost").DMatrix(x)))
    return np.asarray(booster.predict(x))


def _available(package: str | None) -> bool:
    return package is None or (
        importlib.util.find_spec(package) is not None and importlib.util.find_spec("onnxmltools") is not None
    )


def _churn_frame(rows: int, seed: int) -> Any:
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "tenure": rng.integers(0, 72, rows),
            "monthly charges": rng.normal(70.0, 20.0, rows).round(2),
            "contract": rng.choice(["month-to-month", "one year", "two year"], rows),
            "payment": rng.choice(["card", "bank transfer", "check", "électronique"], rows),
        }
    )


def _churn_models() -> dict[str, tuple[Any, Any, Any]]:
    """(model, training frame, request frame) for the mixed-type pipelines."""
    train, requests = _churn_frame(ROWS, 3), _churn_frame(REQUEST_ROWS, 4)
    train.loc[::9, "monthly charges"] = np.nan  # the imputer has work to do
    churned = np.where((train["contract"] == "month-to-month") & (train["tenure"] < 24), "yes", "no")
    spend = train["tenure"] * train["monthly charges"].fillna(70.0) + (train["payment"] == "check") * 100.0
    numeric, categorical = ["tenure", "monthly charges"], ["contract", "payment"]
    clf_prep = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
            ("cat", OneHotEncoder(handle_unknown="ignore"), categorical),
        ]
    )
    reg_prep = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(), MinMaxScaler()), numeric),
            ("cat", OneHotEncoder(handle_unknown="ignore"), categorical),
        ]
    )
    clf = Pipeline([("prep", clf_prep), ("model", linear_model.LogisticRegression())]).fit(train, churned)
    reg = Pipeline(
        [("prep", reg_prep), ("model", ensemble.RandomForestRegressor(n_estimators=10, random_state=0))]
    ).fit(train, spend)
    return {"churn_clf": (clf, train, requests), "churn_reg": (reg, train, requests)}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayServer, dict[str, Any]]]:
    """name -> (model, request rows, parity report), all converted into one repository and served."""
    root: Path = tmp_path_factory.mktemp("matrix") / "models"
    xc, yc = make_classification(ROWS, FEATURES, n_informative=3, n_redundant=0, random_state=0)
    xm, ym = make_classification(ROWS, FEATURES, n_informative=3, n_redundant=0, n_classes=3, random_state=1)
    xr, yr = make_regression(ROWS, FEATURES, noise=1.0, random_state=2)
    models: dict[str, Any] = {}
    for kind, (make_clf, make_reg, package) in KINDS.items():
        if not _available(package):
            continue
        for task, make, (x, y) in (
            ("binary", make_clf, (xc, yc)),
            ("multiclass", make_clf, (xm, ym)),
            ("regressor", make_reg, (xr, yr)),
        ):
            with warnings.catch_warnings():
                # Tiny models on tiny data: whether MLP or SGD converged is not what is tested here.
                warnings.simplefilter("ignore", ConvergenceWarning)
                model = make().fit(x, y)
            result = convert(model, x, repository=root, name=f"{kind}-{task}")
            models[f"{kind}-{task}"] = (model, x[:REQUEST_ROWS], result.report)
    for framework, suffix in BOOSTER_FILES.items():
        if not _available(framework):
            continue
        for task, (x, y) in (("binary", (xc, yc)), ("multiclass", (xm, ym)), ("regressor", (xr, yr))):
            path = _save_booster(framework, task, x, y, root.parent / f"{framework}-{task}{suffix}")
            result = convert(
                _load_booster(framework, path), x, repository=root, name=f"{framework}-file-{task}"
            )
            models[f"{framework}-file-{task}"] = (path, x[:REQUEST_ROWS], result.report)
    if importlib.util.find_spec("pandas") is not None:
        for name, (model, train, requests) in _churn_models().items():
            result = convert(model, train, repository=root, name=name)
            models[name] = (model, requests, result.report)
    with GatewayServer(load_settings(repository=root, poll_interval_s=0)) as server:
        yield server, models


def _outputs(response: Any) -> dict[str, np.ndarray]:
    assert response.status_code == 200, response.text
    return {
        o["name"]: np.array(o["data"], dtype=object if o["datatype"] == "BYTES" else None).reshape(o["shape"])
        for o in response.json()["outputs"]
    }


def _check(model: Any, x: Any, out: dict[str, np.ndarray]) -> None:
    """The served outputs equal the original's, within the converter's documented tolerance."""
    if "value" in out:
        expected = model.predict(x)
        served = out["value"].astype(np.float64).ravel()
        np.testing.assert_allclose(served, expected, rtol=0, atol=1e-4 * float(np.std(expected)) + 1e-6)
        return
    np.testing.assert_array_equal(out["label"].ravel(), model.predict(x))
    if "probabilities" in out:
        np.testing.assert_allclose(out["probabilities"], model.predict_proba(x), rtol=0, atol=1e-4)
    else:
        expected = model.decision_function(x).reshape(len(x), -1)
        served = out["scores"][:, 1:] if expected.shape[1] == 1 else out["scores"]
        np.testing.assert_allclose(served, expected, rtol=0, atol=1e-4 * float(np.std(expected)))


CASES = [f"{kind}-{task}" for kind in KINDS for task in ("binary", "multiclass", "regressor")]


@pytest.mark.parametrize("name", CASES)
def test_served_numeric_model_matches_the_original(served: Any, name: str) -> None:
    package = KINDS[name.rsplit("-", 1)[0]][2]
    if package is not None:
        pytest.importorskip(package)
        pytest.importorskip("onnxmltools")
    server, models = served
    model, x, report = models[name]
    meta = server.client.get(f"/v2/models/{name}").json()
    (spec,) = meta["inputs"]
    # The client sends the same float64 numbers the original saw; the gateway casts them to the input.
    body = {
        "inputs": [
            {
                "name": spec["name"],
                "shape": list(x.shape),
                "datatype": spec["datatype"],
                "data": x.ravel().tolist(),
            }
        ]
    }
    out = _outputs(server.client.post(f"/v2/models/{name}/infer", json=body))
    _check(model, x, out)
    assert report.passed and report.rows == 1000


@pytest.mark.parametrize("name", ["churn_clf", "churn_reg"])
def test_served_mixed_pipeline_takes_named_inputs(served: Any, name: str) -> None:
    pytest.importorskip("pandas")
    server, models = served
    model, frame, _ = models[name]
    meta = server.client.get(f"/v2/models/{name}").json()
    assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [
        ("tenure", "FP32", [-1, 1]),
        ("monthly charges", "FP32", [-1, 1]),
        ("contract", "BYTES", [-1, 1]),
        ("payment", "BYTES", [-1, 1]),
    ]
    rows = len(frame)
    inputs = []
    for column in frame.columns:
        text = frame[column].dtype.kind not in "if"
        values = frame[column].astype(str if text else np.float64).tolist()
        inputs.append(
            {"name": column, "shape": [rows, 1], "datatype": "BYTES" if text else "FP32", "data": values}
        )
    out = _outputs(server.client.post(f"/v2/models/{name}/infer", json={"inputs": inputs}))
    _check(model, frame, out)

    objects = frame.astype(object).to_dict(orient="records")
    response = server.client.post(f"/v1/models/{name}:predict", json={"instances": objects})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    if name == "churn_clf":
        assert [p["label"] for p in predictions] == model.predict(frame).tolist()
        probabilities = np.array([p["probabilities"] for p in predictions])
        np.testing.assert_allclose(probabilities, model.predict_proba(frame), rtol=0, atol=1e-4)
    else:
        expected = model.predict(frame)
        np.testing.assert_allclose(
            np.array(predictions, dtype=np.float64).ravel(), expected, atol=1e-4 * float(np.std(expected))
        )


@pytest.mark.parametrize(
    "name", [f"{f}-file-{t}" for f in BOOSTER_FILES for t in ("binary", "multiclass", "regressor")]
)
def test_served_booster_from_its_file_matches_the_booster(served: Any, name: str) -> None:
    framework = name.split("-", 1)[0]
    pytest.importorskip(framework)
    pytest.importorskip("onnxmltools")
    server, models = served
    path, x, report = models[name]
    body = {
        "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP64", "data": x.ravel().tolist()}]
    }
    out = _outputs(server.client.post(f"/v2/models/{name}/infer", json=body))
    expected = _booster_predict(framework, path, x)
    if name.endswith("regressor"):
        served_values = out["value"].astype(np.float64).ravel()
        np.testing.assert_allclose(
            served_values, expected, rtol=0, atol=1e-4 * float(np.std(expected)) + 1e-6
        )
    else:
        table = np.column_stack([1 - expected, expected]) if expected.ndim == 1 else expected
        np.testing.assert_allclose(out["probabilities"], table, rtol=0, atol=1e-4)
        np.testing.assert_array_equal(out["label"].ravel(), table.argmax(axis=1))
    meta = server.client.get(f"/v2/models/{name}").json()
    assert [o["name"] for o in meta["outputs"]] == (
        ["value"] if name.endswith("regressor") else ["label", "probabilities"]
    )
    assert report.passed and report.rows == 1000
