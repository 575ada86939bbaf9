"""converters: scikit-learn -> ONNX + manifest, parity, profile, repository writes, CLI and demo."""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
from pathlib import Path

import joblib
import numpy as np
import onnxruntime as ort
import pytest
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import OneClassSVM

from sluice.converters import Tolerance, convert, import_onnx
from sluice.converters import cli as convert_cli
from sluice.converters.artifact.errors import ConversionError
from sluice.converters.artifact.manifest import Manifest
from sluice.converters.demo import build_demo_repository


@pytest.fixture(scope="module")
def clf_data() -> tuple[np.ndarray, np.ndarray]:
    x, y = make_classification(n_samples=200, n_features=5, n_informative=3, random_state=0)
    return x, y


@pytest.fixture(scope="module")
def logistic(clf_data: tuple[np.ndarray, np.ndarray]):
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(*clf_data)


@pytest.fixture(scope="module")
def boosted(clf_data: tuple[np.ndarray, np.ndarray]):
    return GradientBoostingClassifier(n_estimators=10, random_state=0).fit(*clf_data)


@pytest.fixture(scope="module")
def reg_data() -> tuple[np.ndarray, np.ndarray]:
    x, y = make_regression(n_samples=150, n_features=4, noise=1.0, random_state=0)
    return x, y


def _session(version_dir: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"])


def test_logistic_pipeline_round_trip_and_manifest(tmp_path: Path, logistic, clf_data) -> None:
    x, _ = clf_data
    names = ["a", "b", "c", "d", "e"]
    messages: list[str] = []
    result = convert(
        logistic, x, repository=tmp_path, name="churn", feature_names=names, progress=messages.append
    )

    assert result.version == 1 and result.path == tmp_path / "churn" / "1"
    label, proba = _session(result.path).run(None, {"input": x.astype(np.float32)})
    np.testing.assert_array_equal(label, logistic.predict(x))
    np.testing.assert_allclose(proba, logistic.predict_proba(x), atol=1e-5)

    manifest = Manifest.read(result.path)
    assert manifest.task == "classification"
    (tensor,) = manifest.inputs
    assert (tensor.name, tensor.datatype, tensor.shape, tensor.features) == (
        "input",
        "FP32",
        (-1, 5),
        tuple(names),
    )
    roles = {t.name: (t.role, t.datatype, t.shape) for t in manifest.outputs}
    assert roles == {"label": ("label", "INT64", (-1,)), "probabilities": ("probabilities", "FP32", (-1, 2))}
    assert manifest.class_labels == [0, 1]
    assert manifest.sha256 == hashlib.sha256((result.path / "model.onnx").read_bytes()).hexdigest()
    assert manifest.parity is not None and manifest.parity["passed"] is True
    assert manifest.parity["rows"] == 1000 and manifest.parity["label_agreement"] >= 0.999
    assert manifest.source["estimator"] == "Pipeline(StandardScaler, LogisticRegression)"
    assert manifest.source["options"]["precision"] == "float32"
    assert set(manifest.source["versions"]) == {"scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy"}
    assert manifest.created_at and manifest.created_at.endswith("+00:00")
    assert any("parity on 1000 rows" in m for m in messages) and "writing churn/1" in messages

    profile = None if manifest.profile is None else manifest.profile.to_json()
    assert profile is not None and profile["rows"] == 200
    b = profile["features"]["b"]
    assert b["mean"] == pytest.approx(x[:, 1].mean()) and b["std"] == pytest.approx(x[:, 1].std())
    assert b["quantiles"]["0.95"] == pytest.approx(np.quantile(x[:, 1], 0.95))
    assert b["min"] == pytest.approx(x[:, 1].min()) and b["missing"] == 0.0
    assert len(b["histogram"]["edges"]) == 11 and sum(b["histogram"]["counts"]) == 200
    shares = profile["outputs"]["class_shares"]
    assert shares["1"] == pytest.approx(np.mean(logistic.predict(x) == 1))


def test_gradient_boosting_classifier_matches(tmp_path: Path, boosted, clf_data) -> None:
    x, _ = clf_data
    result = convert(boosted, x, repository=tmp_path, name="gb")
    label, proba = _session(result.path).run(None, {"input": x.astype(np.float32)})
    np.testing.assert_array_equal(label, boosted.predict(x))
    np.testing.assert_allclose(proba, boosted.predict_proba(x), atol=1e-5)
    assert result.manifest.source["estimator"] == "GradientBoostingClassifier"
    assert result.manifest.inputs[0].features == ("f0", "f1", "f2", "f3", "f4")


def test_ridge_regressor_value_output(tmp_path: Path, reg_data) -> None:
    x, y = reg_data
    model = make_pipeline(StandardScaler(), Ridge()).fit(x, y)
    result = convert(model, x, repository=tmp_path, name="price")
    (value,) = _session(result.path).run(None, {"input": x.astype(np.float32)})
    np.testing.assert_allclose(value.ravel(), model.predict(x), rtol=1e-4, atol=1e-3)
    manifest = result.manifest
    assert manifest.task == "regression" and manifest.class_labels is None
    assert [(t.name, t.role, t.shape) for t in manifest.outputs] == [("value", "value", (-1, 1))]
    assert manifest.parity is not None and manifest.parity["label_agreement"] is None
    assert manifest.profile is not None
    assert manifest.profile.to_json()["outputs"]["value"]["mean"] == pytest.approx(model.predict(x).mean())


def test_float32_shortfall_falls_back_to_float64(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(100, 3))
    # A large offset with a small spread: float32 cannot hold the intercept to the needed precision.
    model = LinearRegression().fit(x, 1e7 + x @ np.array([1.0, 2.0, 3.0]))
    result = convert(model, x, repository=tmp_path, name="big")
    assert result.manifest.source["options"]["precision"] == "float64"
    assert "float32_rejected" in result.manifest.source["options"]
    assert result.manifest.inputs[0].datatype == "FP64"
    (value,) = _session(result.path).run(None, {"input": x})
    np.testing.assert_allclose(value.ravel(), model.predict(x), rtol=0, atol=1e-6)


def test_hist_gradient_boosting_with_missing_values(tmp_path: Path, clf_data) -> None:
    x, y = clf_data
    x = x.copy()
    x[::5, 2] = np.nan
    model = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(x, y)
    result = convert(model, x, repository=tmp_path, name="hgb")
    assert result.report.passed
    assert result.manifest.profile is not None
    assert result.manifest.profile.to_json()["features"]["f2"]["missing"] == pytest.approx(0.2)
    assert result.manifest.profile.to_json()["features"]["f2"]["mean"] == pytest.approx(np.nanmean(x[:, 2]))


def test_next_version_ignores_other_entries_and_leaves_no_temp_dirs(
    tmp_path: Path, logistic, clf_data
) -> None:
    x, _ = clf_data
    model_dir = tmp_path / "churn"
    for entry in ("3", "junk", ".hidden", "0", "007"):
        (model_dir / entry).mkdir(parents=True)
    first = convert(logistic, x, repository=tmp_path, name="churn")
    second = convert(logistic, x, repository=tmp_path, name="churn")
    assert (first.version, second.version) == (4, 5)
    assert (model_dir / "5" / "model.onnx").is_file()
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".tmp-")]


def test_dry_run_writes_nothing(tmp_path: Path, logistic, clf_data) -> None:
    x, _ = clf_data
    repo = tmp_path / "repo"
    result = convert(logistic, x, repository=repo, name="churn", dry_run=True)
    assert result.path == repo / "churn" / "1" and result.report.passed
    assert result.manifest.sha256 is not None
    assert not repo.exists()


def test_unfitted_model_is_refused(tmp_path: Path, clf_data) -> None:
    with pytest.raises(ConversionError, match="model is not fitted"):
        convert(LogisticRegression(), clf_data[0], repository=tmp_path, name="m")


@pytest.mark.parametrize(
    ("model", "named"), [(OneClassSVM(), "OneClassSVM"), (object(), "object")], ids=["svm", "object"]
)
def test_unsupported_model_is_named(tmp_path: Path, clf_data, model: object, named: str) -> None:
    with pytest.raises(ConversionError, match=f"unsupported .*{named}") as info:
        convert(model, clf_data[0], repository=tmp_path, name="m")
    assert "LogisticRegression" in info.value.message  # the supported ones are listed


def test_wrong_sample_width(tmp_path: Path, logistic, clf_data) -> None:
    with pytest.raises(ConversionError, match="4 columns but the model takes 5 features"):
        convert(logistic, clf_data[0][:, :4], repository=tmp_path, name="m")


def test_unwritable_repository(tmp_path: Path, logistic, clf_data) -> None:
    (tmp_path / "afile").write_text("not a directory")
    repo = tmp_path / "afile" / "repo"
    with pytest.raises(ConversionError, match="cannot use the model repository") as info:
        convert(logistic, clf_data[0], repository=repo, name="m")
    assert str(repo / "m") in info.value.message


@pytest.mark.parametrize("name", [".hidden", "a/b", "", "../up", "sp ace"])
def test_unsafe_names(tmp_path: Path, logistic, clf_data, name: str) -> None:
    with pytest.raises(ConversionError, match="invalid model name"):
        convert(logistic, clf_data[0], repository=tmp_path, name=name)


def test_parity_failure_writes_nothing_and_shows_worst_rows(tmp_path: Path, boosted, clf_data) -> None:
    strict = Tolerance(max_abs_diff_proba=0.0, max_abs_diff_value_rel=0.0, min_label_agreement=1.0)
    with pytest.raises(ConversionError, match="disagrees with the model") as info:
        convert(boosted, clf_data[0], repository=tmp_path, name="gb", tolerance=strict)
    assert "nothing was written" in info.value.message
    assert info.value.message.count("row ") >= 5 and "original" in info.value.message
    assert len(info.value.details["worst"]) == 5
    assert list(tmp_path.iterdir()) == []


def _args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sluice convert")
    convert_cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_converts_a_joblib_file_with_a_csv_sample(tmp_path: Path, logistic, clf_data, capsys) -> None:
    x, _ = clf_data
    joblib.dump(logistic, tmp_path / "model.joblib")
    with open(tmp_path / "sample.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["a", "b", "c", "d", "e"])
        writer.writerows(x.tolist())
    argv = [str(tmp_path / "model.joblib"), "--repository", str(tmp_path / "repo"), "--name", "churn"]
    code = convert_cli.run(_args([*argv, "--sample", str(tmp_path / "sample.csv")]))
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"wrote {tmp_path / 'repo' / 'churn' / '1'} (model.onnx" in out and "label agreement" in out
    assert "checking parity" in err
    manifest = Manifest.read(tmp_path / "repo" / "churn" / "1")
    assert manifest.inputs[0].features == ("a", "b", "c", "d", "e")


def test_cli_without_sample_uses_the_scaler_and_skips_the_profile(tmp_path: Path, logistic, capsys) -> None:
    joblib.dump(logistic, tmp_path / "model.joblib")
    code = convert_cli.run(
        _args([str(tmp_path / "model.joblib"), "--repository", str(tmp_path), "--name", "m"])
    )
    assert code == 0, capsys.readouterr().err
    assert Manifest.read(tmp_path / "m" / "1").profile is None


def test_cli_requires_a_sample_without_a_leading_scaler(tmp_path: Path, boosted, capsys) -> None:
    joblib.dump(boosted, tmp_path / "model.joblib")
    code = convert_cli.run(
        _args([str(tmp_path / "model.joblib"), "--repository", str(tmp_path), "--name", "m"])
    )
    assert code == 2
    assert "--sample is required" in capsys.readouterr().err


def test_cli_corrupt_pickle_is_a_clean_user_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "model.joblib").write_bytes(b"\x80\x04this is not a pickle")
    code = convert_cli.run(
        _args([str(tmp_path / "model.joblib"), "--repository", str(tmp_path), "--name", "m"])
    )
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert "cannot load a model" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()


def test_demo_builds_then_reuses(tmp_path: Path) -> None:
    names = build_demo_repository(tmp_path, progress=lambda _m: None)
    assert names == ["breast_cancer", "iris", "diabetes"]
    layout = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    digests = {p: Manifest.read(p).sha256 for p in tmp_path.glob("*/[0-9]*")}
    assert len(digests) == 4
    assert "labels:" in (tmp_path / "breast_cancer" / "config.yaml").read_text()
    assert Manifest.read(tmp_path / "iris" / "1").class_labels == [0, 1, 2]

    messages: list[str] = []
    build_demo_repository(tmp_path, progress=messages.append)
    reused = sorted(m.removeprefix("reusing ") for m in messages if m.startswith("reusing"))
    assert reused == ["breast_cancer/1", "breast_cancer/2", "diabetes/1", "iris/1"]
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == layout
    assert {p: Manifest.read(p).sha256 for p in tmp_path.glob("*/[0-9]*")} == digests


@pytest.fixture(scope="module")
def churn():
    """A DataFrame-trained pipeline over numeric and string columns, and its training frame."""
    pd = pytest.importorskip("pandas")
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(5)
    frame = pd.DataFrame(
        {
            "tenure": rng.integers(0, 72, 240).astype(float),
            "plan": rng.choice(["basic", "plus", "pro"], 240, p=[0.5, 0.3, 0.2]),
            "region": rng.choice(["north", "south"], 240),
        }
    )
    frame.loc[::10, "tenure"] = np.nan
    churned = (frame["plan"] == "basic") & (frame["tenure"].fillna(0) < 30)
    prep = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(), StandardScaler()), ["tenure"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan", "region"]),
        ]
    )
    return make_pipeline(prep, LogisticRegression()).fit(frame, churned), frame


def test_mixed_pipeline_gets_one_named_input_per_column(tmp_path: Path, churn) -> None:
    model, frame = churn
    result = convert(model, frame, repository=tmp_path, name="churn")
    assert [(t.name, t.datatype, t.shape, t.features) for t in result.manifest.inputs] == [
        ("tenure", "FP32", (-1, 1), ("tenure",)),
        ("plan", "BYTES", (-1, 1), ("plan",)),
        ("region", "BYTES", (-1, 1), ("region",)),
    ]
    assert result.manifest.source["options"]["inputs"] == "one per column"
    clean = frame.dropna()
    feeds = {
        "tenure": clean[["tenure"]].to_numpy(np.float32),
        "plan": clean[["plan"]].to_numpy(object),
        "region": clean[["region"]].to_numpy(object),
    }
    label, proba = _session(result.path).run(None, feeds)
    np.testing.assert_array_equal(label, model.predict(clean))
    np.testing.assert_allclose(proba, model.predict_proba(clean), atol=1e-5)


def test_profile_categorical_frequencies_match_numpy(tmp_path: Path, churn) -> None:
    model, frame = churn
    typed = convert(model, frame, repository=tmp_path, name="churn").manifest.profile
    assert typed is not None
    profile = typed.to_json()
    plan = profile["features"]["plan"]
    values, counts = np.unique(frame["plan"].to_numpy(str), return_counts=True)
    assert plan["type"] == "categorical" and plan["distinct"] == len(values) and plan["other"] == 0.0
    expected = dict(zip(values.tolist(), (counts / len(frame)).tolist(), strict=True))
    assert plan["categories"] == pytest.approx(expected)
    assert list(plan["categories"]) == sorted(plan["categories"], key=lambda c: -plan["categories"][c])
    tenure = profile["features"]["tenure"]
    assert tenure["type"] == "numeric" and tenure["missing"] == pytest.approx(0.1)
    assert tenure["mean"] == pytest.approx(np.nanmean(frame["tenure"]))
    assert tenure["std"] == pytest.approx(np.nanstd(frame["tenure"]))
    assert tenure["quantiles"]["0.5"] == pytest.approx(np.nanquantile(frame["tenure"], 0.5))
    shares = profile["outputs"]["class_shares"]
    assert shares["True"] == pytest.approx(model.predict(frame).mean())


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        (["tenure", "plan"], "lacks the model's feature.*'region'"),
        (["tenure", "plan", "region", "extra"], "does not take: 'extra'"),
    ],
    ids=["missing", "extra"],
)
def test_sample_columns_must_match_the_model(tmp_path: Path, churn, columns, message) -> None:
    model, frame = churn
    sample = frame.assign(extra=1.0)[columns]
    with pytest.raises(ConversionError, match=message) as info:
        convert(model, sample, repository=tmp_path, name="churn")
    assert "the model's features are 'tenure', 'plan', 'region'" in info.value.message
    assert list(tmp_path.iterdir()) == []


def test_reordered_sample_columns_are_matched_by_name(tmp_path: Path, churn) -> None:
    model, frame = churn
    result = convert(model, frame[["region", "tenure", "plan"]], repository=tmp_path, name="churn")
    assert [t.name for t in result.manifest.inputs] == ["tenure", "plan", "region"]


def test_missing_category_is_refused(tmp_path: Path, churn) -> None:
    model, frame = churn
    holed = frame.astype({"plan": object})
    holed.loc[3, "plan"] = None
    with pytest.raises(ConversionError, match="categorical column 'plan' has a missing value at row 3"):
        convert(model, holed, repository=tmp_path, name="churn")


@pytest.mark.parametrize("kind", ["svc", "sgd"])
def test_classifier_without_probabilities_serves_oriented_scores(tmp_path: Path, clf_data, kind) -> None:
    from sklearn.linear_model import SGDClassifier
    from sklearn.svm import SVC

    x, y = clf_data
    model = (SVC(kernel="linear") if kind == "svc" else SGDClassifier(random_state=0)).fit(x, y)
    result = convert(model, x, repository=tmp_path, name="m")
    assert [(t.name, t.role) for t in result.manifest.outputs] == [("label", "label"), ("scores", "other")]
    assert result.report is not None and result.report.compared == "scores"
    label, scores = _session(result.path).run(None, {"input": x.astype(np.float32)})
    np.testing.assert_array_equal(label, model.predict(x))
    # Column 1 leans towards class 1, like the probabilities of a probabilistic classifier.
    np.testing.assert_allclose(scores[:, 1], model.decision_function(x), rtol=1e-4, atol=1e-4)
    assert result.manifest.profile is not None
    assert result.manifest.profile.to_json()["outputs"]["score"] == "decision_function"


def test_unsupported_estimator_lists_the_family_and_the_extras(tmp_path: Path, clf_data) -> None:
    from sklearn.naive_bayes import GaussianNB

    x, y = clf_data
    with pytest.raises(ConversionError, match=r"unsupported estimator GaussianNB \(Pipeline step") as info:
        convert(make_pipeline(StandardScaler(), GaussianNB()).fit(x, y), x, repository=tmp_path, name="m")
    for name in ("SVC", "KNeighborsRegressor", "ExtraTreesClassifier", "ColumnTransformer", "OneHotEncoder"):
        assert name in info.value.message


def _csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_cli_converts_a_mixed_pipeline_from_a_csv_with_strings(tmp_path: Path, churn, capsys) -> None:
    model, frame = churn
    joblib.dump(model, tmp_path / "churn.joblib")
    sample = _csv(tmp_path / "sample.csv", list(frame.columns), frame.astype(object).values.tolist())
    argv = [str(tmp_path / "churn.joblib"), "--repository", str(tmp_path / "repo"), "--name", "churn"]
    code = convert_cli.run(_args([*argv, "--sample", str(sample), "--dry-run"]))
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "dry run: would write" in out and "label agreement" in out
    assert not (tmp_path / "repo").exists()


def test_cli_imports_an_onnx_file_with_a_profile(tmp_path: Path, boosted, clf_data, capsys) -> None:
    x, _ = clf_data
    source = convert(boosted, x, repository=tmp_path / "elsewhere", name="gb")
    onnx_file = tmp_path / "gb.onnx"
    onnx_file.write_bytes((source.path / "model.onnx").read_bytes())
    sample = _csv(tmp_path / "sample.csv", ["a", "b", "c", "d", "e"], x.tolist())
    argv = [str(onnx_file), "--repository", str(tmp_path / "repo"), "--name", "gb", "--sample", str(sample)]
    code = convert_cli.run(_args(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "parity: imported" in out and "validating gb.onnx" in err
    manifest = Manifest.read(tmp_path / "repo" / "gb" / "1")
    assert manifest.parity == {
        "status": "imported",
        "note": "no source model to compare with: checked by onnx.checker and loaded by onnxruntime",
    }
    assert manifest.task == "classification" and manifest.class_labels == [0, 1]
    assert manifest.inputs[0].features == ("a", "b", "c", "d", "e")
    assert manifest.source["framework"] == "onnx" and manifest.source["imported_from"] == "gb.onnx"
    assert manifest.profile is not None
    written = manifest.profile.to_json()
    assert written["features"]["c"]["mean"] == pytest.approx(x[:, 2].mean())
    assert written["outputs"]["class_shares"]["1"] == pytest.approx(boosted.predict(x).mean())


def test_cli_import_refuses_a_corrupt_onnx_file(tmp_path: Path, capsys) -> None:
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x07not really onnx")
    code = convert_cli.run(
        _args([str(tmp_path / "broken.onnx"), "--repository", str(tmp_path), "--name", "m"])
    )
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert "broken.onnx: not a valid ONNX model" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()


def test_cli_help_warns_that_pickles_execute_code() -> None:
    parser = argparse.ArgumentParser(prog="sluice convert")
    convert_cli.add_arguments(parser)
    assert "executes code" in " ".join(parser.format_help().split())


def test_non_model_pickle_is_refused(tmp_path: Path, clf_data, capsys) -> None:
    joblib.dump({"weights": [1, 2, 3]}, tmp_path / "model.joblib")
    sample = _csv(tmp_path / "sample.csv", ["a", "b", "c", "d", "e"], clf_data[0].tolist())
    argv = [
        str(tmp_path / "model.joblib"),
        "--repository",
        str(tmp_path),
        "--name",
        "m",
        "--sample",
        str(sample),
    ]
    assert convert_cli.run(_args(argv)) == 2
    assert "unsupported model object dict" in capsys.readouterr().err


# --- LightGBM and XGBoost boosters, loaded from their own files ------------------------------------------


def _booster_data(task: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(300, 4))
    if task == "binary":
        return x, (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    if task == "multiclass":
        return x, np.digitize(x[:, 0] - x[:, 2], [-0.5, 0.5])
    return x, x @ np.array([1.0, 2.0, -1.0, 0.5]) + rng.normal(scale=0.1, size=300)


def _lightgbm_file(path: Path, task: str, names: list[str] | None = None) -> Path:
    lightgbm = pytest.importorskip("lightgbm")
    x, y = _booster_data(task)
    objective = {"binary": "binary", "multiclass": "multiclass", "regression": "regression"}[task]
    params = {"objective": objective, "num_leaves": 7, "verbose": -1, "num_threads": 1}
    if task == "multiclass":
        params["num_class"] = 3
    data = lightgbm.Dataset(x, y, feature_name=names or "auto")
    lightgbm.train(params, data, num_boost_round=10).save_model(path)
    return path


def _xgboost_file(path: Path, task: str, names: list[str] | None = None, objective: str = "") -> Path:
    xgboost = pytest.importorskip("xgboost")
    x, y = _booster_data(task)
    default = {"binary": "binary:logistic", "multiclass": "multi:softprob", "regression": "reg:squarederror"}
    params = {"objective": objective or default[task], "max_depth": 3, "nthread": 1}
    if task == "multiclass":
        params["num_class"] = 3
    xgboost.train(params, xgboost.DMatrix(x, y, feature_names=names), num_boost_round=10).save_model(path)
    return path


def _booster_predictions(framework: str, path: Path, x: np.ndarray) -> np.ndarray:
    """What the user's own library predicts from the saved file."""
    if framework == "lightgbm":
        import lightgbm

        return lightgbm.Booster(model_file=str(path)).predict(x)
    import xgboost

    return xgboost.Booster(model_file=str(path)).predict(xgboost.DMatrix(x))


BOOSTER_FILES = [
    ("lightgbm", ".txt", "binary"),
    ("lightgbm", ".txt", "regression"),
    ("lightgbm", ".txt", "multiclass"),
    ("xgboost", ".json", "binary"),
    ("xgboost", ".ubj", "regression"),
    ("xgboost", ".json", "multiclass"),
]


@pytest.mark.parametrize(("framework", "suffix", "task"), BOOSTER_FILES)
def test_booster_from_its_file_converts_with_parity(tmp_path: Path, framework, suffix, task) -> None:
    save = _lightgbm_file if framework == "lightgbm" else _xgboost_file
    path = save(tmp_path / f"model{suffix}", task)
    loaded = pytest.importorskip(framework).Booster(model_file=str(path))
    x, _ = _booster_data(task)
    result = convert(loaded, x, repository=tmp_path / "repo", name="m")

    assert result.report is not None and result.report.passed and result.report.precision == "float32"
    manifest = Manifest.read(result.path)
    assert manifest.source["framework"] == framework
    assert manifest.source["estimator"].startswith(("LightGBM Booster(", "XGBoost Booster("))
    assert set(manifest.source["versions"]) == {framework, "onnxmltools", "onnx", "onnxruntime", "numpy"}
    assert manifest.inputs[0].features == ("f0", "f1", "f2", "f3")
    expected = _booster_predictions(framework, path, x)
    outputs = _session(result.path).run(None, {"input": x.astype(np.float32)})
    if task == "regression":
        assert manifest.task == "regression" and manifest.class_labels is None
        assert [(t.name, t.role, t.shape) for t in manifest.outputs] == [("value", "value", (-1, 1))]
        np.testing.assert_allclose(outputs[0].ravel(), expected, rtol=0, atol=1e-4 * expected.std())
        return
    n_classes = 2 if task == "binary" else 3
    assert manifest.task == "classification" and manifest.class_labels == list(range(n_classes))
    assert [(t.name, t.role, t.shape) for t in manifest.outputs] == [
        ("label", "label", (-1,)),
        ("probabilities", "probabilities", (-1, n_classes)),
    ]
    label, probabilities = outputs
    expected = np.column_stack([1 - expected, expected]) if task == "binary" else expected
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(label, expected.argmax(axis=1))
    profile = manifest.to_json()["profile"]
    assert profile["outputs"]["class_shares"]["0"] == pytest.approx(np.mean(expected.argmax(axis=1) == 0))


def test_booster_feature_names_come_from_the_booster(tmp_path: Path) -> None:
    lightgbm = pytest.importorskip("lightgbm")
    path = _lightgbm_file(tmp_path / "model.txt", "binary", names=["age", "income", "tenure", "visits"])
    x, _ = _booster_data("binary")
    result = convert(lightgbm.Booster(model_file=str(path)), x, repository=tmp_path, name="m")
    assert result.manifest.inputs[0].features == ("age", "income", "tenure", "visits")


@pytest.mark.parametrize(
    ("objective", "hint"),
    [("multi:softmax", "multi:softprob"), ("binary:logitraw", "binary:logistic")],
)
def test_xgboost_objective_without_probabilities_is_refused(tmp_path: Path, objective, hint) -> None:
    xgboost = pytest.importorskip("xgboost")
    task = "multiclass" if objective.startswith("multi") else "binary"
    path = _xgboost_file(tmp_path / "model.json", task, objective=objective)
    x, _ = _booster_data(task)
    with pytest.raises(ConversionError, match="predicts no probabilities") as info:
        convert(xgboost.Booster(model_file=str(path)), x, repository=tmp_path, name="m")
    assert hint in info.value.message
    assert not (tmp_path / "m").exists()


def _cli(tmp_path: Path, model: Path, *extra: str) -> int:
    argv = [str(model), "--repository", str(tmp_path / "repo"), "--name", "m", *extra]
    return convert_cli.run(_args(argv))


def _booster_csv(tmp_path: Path, task: str) -> Path:
    x, _ = _booster_data(task)
    return _csv(tmp_path / "sample.csv", ["age", "income", "tenure", "visits"], x.tolist())


@pytest.mark.parametrize(
    ("framework", "suffix"), [("lightgbm", ".txt"), ("xgboost", ".json"), ("xgboost", ".ubj")]
)
def test_cli_detects_the_booster_from_its_file(tmp_path: Path, capsys, framework, suffix) -> None:
    save = _lightgbm_file if framework == "lightgbm" else _xgboost_file
    model = save(tmp_path / f"model{suffix}", "binary")
    code = _cli(tmp_path, model, "--sample", str(_booster_csv(tmp_path, "binary")))
    out, err = capsys.readouterr()
    assert code == 0, err
    assert (
        "converting with onnxmltools (float32)" in err and "result                            passed" in out
    )
    manifest = json.loads((tmp_path / "repo" / "m" / "1" / "manifest.json").read_text())
    assert manifest["source"]["framework"] == framework and manifest["class_labels"] == [0, 1]
    assert manifest["inputs"][0]["features"] == ["age", "income", "tenure", "visits"]
    assert manifest["profile"]["features"]["age"]["mean"] == pytest.approx(
        _booster_data("binary")[0][:, 0].mean()
    )


def test_cli_booster_with_another_suffix_needs_the_framework_flag(tmp_path: Path, capsys) -> None:
    model = _xgboost_file(tmp_path / "model.json", "regression").rename(tmp_path / "model.bin")
    sample = str(_booster_csv(tmp_path, "regression"))
    assert _cli(tmp_path, model, "--sample", sample) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1  # nothing ran: the error is all there is
    assert err.startswith("sluice convert: error: ") and "model.bin: cannot tell which framework" in err
    assert "--framework scikit-learn|lightgbm|xgboost|onnx" in err

    assert _cli(tmp_path, model, "--sample", sample, "--framework", "xgboost") == 0
    assert Manifest.read(tmp_path / "repo" / "m" / "1").source["framework"] == "xgboost"


def test_cli_txt_that_is_not_lightgbm_asks_for_the_framework(tmp_path: Path, capsys) -> None:
    (tmp_path / "model.txt").write_text("weights: 1 2 3\n")
    assert _cli(tmp_path, tmp_path / "model.txt") == 2
    err = capsys.readouterr().err
    assert "model.txt: a .txt file that is not a LightGBM model" in err and "--framework" in err


def test_cli_booster_file_of_the_wrong_framework_is_a_clean_error(tmp_path: Path, capsys) -> None:
    model = _lightgbm_file(tmp_path / "model.txt", "binary")
    assert _cli(tmp_path, model, "--framework", "xgboost") == 2
    err = capsys.readouterr().err
    assert "model.txt: not an XGBoost model file" in err and "Traceback" not in err


def test_cli_booster_needs_a_sample_and_says_why(tmp_path: Path, capsys) -> None:
    model = _lightgbm_file(tmp_path / "model.txt", "regression")
    assert _cli(tmp_path, model) == 2
    err = capsys.readouterr().err
    assert "--sample is required: a booster records split thresholds" in err
    assert not (tmp_path / "repo").exists()


def test_cli_booster_header_must_follow_the_boosters_feature_names(tmp_path: Path, capsys) -> None:
    model = _xgboost_file(tmp_path / "model.json", "binary", names=["visits", "tenure", "income", "age"])
    assert _cli(tmp_path, model, "--sample", str(_booster_csv(tmp_path, "binary"))) == 2
    err = capsys.readouterr().err
    assert "the header must list the model's features in order: visits, tenure, income, age" in err


class _LinearModel:
    """A framework sluice has never heard of: y = x @ w, with its own ONNX graph (a FrameworkModel)."""

    framework = "numpy-linear"
    description = "LinearModel(w)"
    converter = "onnx.helper"
    distributions = ("numpy", "onnx")
    precisions = ("float32",)
    task, compared, class_labels = "regression", "value", None
    per_column_inputs = False
    n_features = 2

    def __init__(self, w: np.ndarray) -> None:
        self.w = w
        self.target_opset = {"": 17}
        self.feature_names = ["height", "weight"]

    def predict(self, x):
        return None, np.asarray(x, dtype=np.float64) @ self.w

    def to_onnx(self, precision, inputs):
        from onnx import TensorProto, helper, numpy_helper

        graph = helper.make_graph(
            [helper.make_node("MatMul", ["input", "w"], ["value"])],
            "linear",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 2])],
            [helper.make_tensor_value_info("value", TensorProto.FLOAT, [None, 1])],
            [numpy_helper.from_array(self.w.reshape(2, 1).astype(np.float32), "w")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        return model.SerializeToString()

    def synthetic_sample(self):
        return None, "no sample"


def test_any_framework_model_converts_through_the_protocol(tmp_path: Path) -> None:
    from sluice.converters import FrameworkModel

    model = _LinearModel(np.array([0.5, 2.0]))
    assert isinstance(model, FrameworkModel)
    x = np.random.default_rng(3).normal(size=(50, 2))
    result = convert(model, x, repository=tmp_path, name="linear")
    source = Manifest.read(result.path).source
    assert (source["framework"], source["estimator"]) == ("numpy-linear", "LinearModel(w)")
    assert set(source["versions"]) == {"numpy", "onnx"} and source["options"]["target_opset"] == {"": 17}
    assert result.manifest.inputs[0].features == ("height", "weight") and result.report.passed


# --- Imported ONNX files: output roles -----------------------------------------------------------------


def _logits_onnx(path: Path, outputs: tuple[str, str] = ("label", "logits")) -> Path:
    """A two-class 'classifier' whose scores are raw logits: label = argmax(input), scores = input."""
    import onnx
    from onnx import TensorProto, helper

    label, scores = outputs
    graph = helper.make_graph(
        [
            helper.make_node("ArgMax", ["input"], [label], axis=1, keepdims=0),
            helper.make_node("Identity", ["input"], [scores]),
        ],
        "logits",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 2])],
        [
            helper.make_tensor_value_info(label, TensorProto.INT64, [None]),
            helper.make_tensor_value_info(scores, TensorProto.FLOAT, [None, 2]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, path)
    return path


def test_import_guesses_roles_and_warns_that_prediction_drift_is_off(tmp_path: Path, capsys) -> None:
    assert _cli(tmp_path, _logits_onnx(tmp_path / "clf.onnx")) == 0
    out, err = capsys.readouterr()
    assert "parity: imported" in out
    (warning,) = [line for line in err.splitlines() if line.startswith("sluice convert: warning: ")]
    assert "no output with role 'probabilities' (its outputs 'logits' are 'other')" in warning
    assert "prediction drift will be off" in warning and "--output-role NAME=probabilities" in warning
    manifest = Manifest.read(tmp_path / "repo" / "m" / "1")
    assert manifest.task == "classification"
    assert [(t.name, t.role) for t in manifest.outputs] == [("label", "label"), ("logits", "other")]


def test_output_role_flag_overrides_the_guess(tmp_path: Path, capsys) -> None:
    model = _logits_onnx(tmp_path / "clf.onnx")
    assert _cli(tmp_path, model, "--output-role", "logits=probabilities") == 0
    assert "warning" not in capsys.readouterr().err
    manifest = Manifest.read(tmp_path / "repo" / "m" / "1")
    assert [(t.name, t.role) for t in manifest.outputs] == [("label", "label"), ("logits", "probabilities")]


def test_output_roles_from_python_override_a_name_that_looks_right(tmp_path: Path) -> None:
    model = _logits_onnx(tmp_path / "clf.onnx", outputs=("output_label", "probabilities"))
    result = import_onnx(model, repository=tmp_path, name="m", output_roles={"probabilities": "other"})
    assert [(t.name, t.role) for t in result.manifest.outputs] == [
        ("output_label", "label"),
        ("probabilities", "other"),
    ]
    assert len(result.warnings) == 1 and "prediction drift will be off" in result.warnings[0]


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        (
            "logitz=probabilities",
            "output role for 'logitz': the graph has no such output; its outputs are 'label', 'logits'",
        ),
        (
            "logits=scores",
            "unknown output role 'scores' for 'logits': roles are label, probabilities, value, other",
        ),
        ("logits=probability", "unknown output role 'probability' for 'logits'"),
        ("logits", "--output-role expects NAME=ROLE, got 'logits'"),
        ("logits=label", "outputs 'label', 'logits' all have role 'label'"),
    ],
    ids=["unknown-name", "scores", "unknown-role", "malformed", "two-labels"],
)
def test_bad_output_role_is_one_line_and_writes_nothing(tmp_path: Path, capsys, flag, message) -> None:
    model = _logits_onnx(tmp_path / "clf.onnx")
    assert _cli(tmp_path, model, "--output-role", flag) == 2
    out, err = capsys.readouterr()
    (line,) = [line for line in err.splitlines() if line.startswith("sluice convert:")]
    assert out == "" and line.startswith("sluice convert: error: ") and "Traceback" not in err
    assert message in line
    assert not (tmp_path / "repo").exists()


def test_output_role_is_refused_for_a_converted_model(tmp_path: Path, logistic, capsys) -> None:
    joblib.dump(logistic, tmp_path / "model.joblib")
    assert _cli(tmp_path, tmp_path / "model.joblib", "--output-role", "label=label") == 2
    assert "--output-role is for an imported .onnx file" in capsys.readouterr().err
