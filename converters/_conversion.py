"""``convert``: a fitted model and a sample in, a parity-checked ``model.onnx`` + ``manifest.json`` out."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from sluice.converters.artifact.errors import ConversionError
from sluice.converters.artifact.manifest import Manifest
from sluice.converters.artifact.profile import Profile

from . import _onnx, _repository
from ._adapters import adapt
from ._framework import FrameworkModel, short_cause
from ._parity import ParityReport, Tolerance, compare
from ._profile import build_profile, small_sample_warning
from ._sample import CATEGORICAL, Sample, load

#: Parity runs on at least this many rows (resampling a smaller sample with replacement) ...
MIN_PARITY_ROWS = 1000
#: ... and at most this many (a seeded subset of a larger one), which keeps a check to seconds.
MAX_PARITY_ROWS = 50_000
_SEED = 0


@dataclass
class ConversionResult:
    """``path`` is the version directory written, or the one that would be written on a dry run.

    ``report`` is None for an imported ``.onnx`` file: there is no original to compare it with.
    ``warnings`` are what the user should know although the version was written (one line each).
    """

    version: int
    path: Path
    manifest: Manifest
    report: ParityReport | None
    warnings: list[str] = field(default_factory=list)


def _parity_rows(n: int) -> tuple[np.ndarray, bool]:
    rng = np.random.default_rng(_SEED)
    if n < MIN_PARITY_ROWS:
        # Resample whole rows only: jitter would test inputs the model was never meant to see.
        return rng.integers(0, n, size=MIN_PARITY_ROWS), True
    if n > MAX_PARITY_ROWS:
        return np.sort(rng.choice(n, size=MAX_PARITY_ROWS, replace=False)), True
    return np.arange(n), False


def _predict(adapter: FrameworkModel, x: Any) -> tuple[np.ndarray | None, np.ndarray]:
    try:
        return adapter.predict(x)
    except Exception as exc:  # whatever the estimator raises on this sample (NaN without an imputer, ...)
        raise ConversionError(f"the model cannot predict on the sample: {short_cause(exc)}") from exc


def _versions(distributions: Sequence[str]) -> dict[str, str]:
    found = {}
    for dist in distributions:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "unknown"
    return found


def convert(
    model: Any,
    sample: Any,
    *,
    repository: str | Path,
    name: str,
    feature_names: Sequence[str] | None = None,
    tolerance: Tolerance | None = None,
    dry_run: bool = False,
    progress: Callable[[str], None] | None = None,
    profile: bool = True,
    calibrate: Callable[[Profile], Mapping[str, Any]] | None = None,
) -> ConversionResult:
    """Convert ``model`` to ONNX, check parity on ``sample``, and write the next version of ``name``.

    ``model`` is a fitted scikit-learn estimator or Pipeline, a ``lightgbm.Booster``, an
    ``xgboost.Booster``, or any ``FrameworkModel``; ``adapt`` picks the adapter.
    Tries a float32 graph first (what clients send and the gateway serves fastest); if that misses the
    tolerance it tries a float64 graph where the converter can write one, and records the choice in
    ``manifest.source["options"]``.
    Nothing is written unless parity passes. ``profile=False`` leaves ``manifest.profile`` empty, for
    samples that do not stand for real traffic (such as a synthetic one). ``calibrate`` (the monitor's,
    passed in by ``sluice convert``: converters never import the monitor) measures the profile's
    calibration once, stored in it so the gateway need not replay it at load.
    """
    say = progress or (lambda _message: None)
    _repository.check_name(name)
    tolerance = tolerance or Tolerance()
    model_dir = Path(repository) / name
    _repository.next_version(model_dir)  # fail on an unusable repository before the slow part
    adapter = adapt(model)
    data = load(
        sample,
        n_features=adapter.n_features,
        names_in=adapter.feature_names,
        given_names=feature_names,
        per_column_inputs=adapter.per_column_inputs,
    )
    rows, resampled = _parity_rows(data.rows)
    labels, scores = _predict(adapter, data.model_input(rows))

    attempts: list[tuple[str, ParityReport | None, str]] = []
    chosen: tuple[bytes, Any, ParityReport] | None = None
    precisions = list(adapter.precisions)
    for step, precision in enumerate(precisions):
        say(f"converting with {adapter.converter} ({precision})")
        try:
            model_bytes, session = _graph(adapter, data, precision)
            feeds = data.feeds(rows, precision, data.names if data.named else ["input"])
            if adapter.compared == "scores":
                model_bytes, session = _orient_scores(model_bytes, session, feeds, scores)
            say(f"checking parity on {len(rows)} rows")
            outputs = _onnx.run(session, feeds)
        except ConversionError as exc:
            if step == 0:
                raise
            attempts.append((precision, None, exc.message))
            break
        onnx_labels, onnx_scores = _onnx_outputs(adapter, outputs, scores)
        try:
            report = compare(
                rows=rows,
                labels=labels,
                scores=scores,
                onnx_labels=onnx_labels,
                onnx_scores=onnx_scores,
                precision=precision,
                tolerance=tolerance,
                compared=adapter.compared,
            )
        except ValueError as exc:
            raise ConversionError(f"cannot compare the graph with the model: {exc}") from exc
        if report.passed:
            chosen = (model_bytes, session, report)
            break
        attempts.append((precision, report, "; ".join(report.failures)))
        if step + 1 < len(precisions):
            say(f"{precision} parity failed ({'; '.join(report.failures)}); trying {precisions[step + 1]}")
    if chosen is None:
        raise _parity_error(adapter.description, attempts)
    model_bytes, session, report = chosen

    inputs, outputs_spec = _onnx.signature(session, data.names, roles=_onnx.ROLES | {"scores": "other"})
    options: dict[str, Any] = {
        "precision": report.precision,
        "target_opset": dict(adapter.target_opset),
        "parity_rows": len(rows),
        "parity_rows_resampled": resampled,
        "inputs": "one per column" if data.named else "one matrix",
    }
    if adapter.task == "classification":
        options["zipmap"] = False
    if attempts:
        options["float32_rejected"] = attempts[0][2]
    reference = None
    if profile:
        out_labels, out_scores = (labels, scores) if not resampled else _predict(adapter, data.model_input())
        reference = build_profile(
            data.columns,
            data.names,
            labels=out_labels,
            scores=out_scores,
            class_labels=adapter.class_labels,
            categorical=[n for n, k in zip(data.names, data.kinds, strict=True) if k == CATEGORICAL],
            probabilities=adapter.compared == "probabilities",
        )
        if calibrate is not None:
            reference = replace(reference, calibration=calibrate(reference))
    manifest = Manifest(
        inputs=inputs,
        outputs=outputs_spec,
        task=adapter.task,
        class_labels=adapter.class_labels,
        source={
            "framework": adapter.framework,
            "estimator": adapter.description,
            "versions": _versions(adapter.distributions),
            "options": options,
        },
        parity=report.to_json(),
        sha256=hashlib.sha256(model_bytes).hexdigest(),
        profile=reference,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    warnings = small_sample_warning(reference)
    return _finish(model_dir, name, model_bytes, manifest, report, dry_run, say, warnings)


def _graph(adapter: FrameworkModel, data: Sample, precision: str) -> tuple[bytes, Any]:
    """The converted graph with sluice's input and output names, and an onnxruntime session on it."""
    if data.named:
        kinds = [(n, k) for n, k in zip(data.names, data.kinds, strict=True)]
    else:
        kinds = [("input", "matrix")]
    model_bytes = adapter.to_onnx(precision, kinds)
    produced = _onnx.output_names(model_bytes)
    # A regressor's one output is "variable", or "variable1" when an input took that name (KNN).
    outputs = {produced[0]: "value"} if adapter.task == "regression" and len(produced) == 1 else {}
    if adapter.compared == "scores":
        outputs["probabilities"] = "scores"  # decision scores: calling them probabilities would mislead
    model_bytes = _onnx.rename_outputs(model_bytes, outputs)
    session = _onnx.open_session(model_bytes)
    if data.named:
        # skl2onnx sanitises column names ("monthly charges" -> "monthly_charges"); put them back.
        got = [a.name for a in session.get_inputs()]
        if got != data.names:
            model_bytes = _onnx.rename(model_bytes, dict(zip(got, data.names, strict=True)), kind="input")
            session = _onnx.open_session(model_bytes)
            if [a.name for a in session.get_inputs()] != data.names:
                raise ConversionError(f"the graph's inputs {got} cannot be named after the features")
    return model_bytes, session


def _onnx_outputs(
    adapter: FrameworkModel, outputs: dict[str, np.ndarray], scores: np.ndarray
) -> tuple[np.ndarray | None, np.ndarray]:
    if adapter.task != "classification":
        return None, outputs.get("value", next(iter(outputs.values())))
    key = "probabilities" if adapter.compared == "probabilities" else "scores"
    onnx_labels, onnx_scores = outputs.get("label"), outputs.get(key)
    if onnx_labels is None or onnx_scores is None:
        raise ConversionError(f"the converted graph lacks label/{key} outputs: {list(outputs)}")
    if scores.shape[1] == 1 and onnx_scores.ndim == 2 and onnx_scores.shape[1] == 2:
        # A binary decision function is one column; the graph serves (-score, score).
        onnx_scores = onnx_scores[:, 1:]
    return onnx_labels, onnx_scores


def _orient_scores(model_bytes: bytes, session: Any, feeds: dict[str, np.ndarray], scores: np.ndarray) -> Any:
    """A binary graph whose scores read (score, -score) flipped to (-score, score), else unchanged.

    skl2onnx puts a binary SVC's decision function in column 0 and an SGDClassifier's in column 1;
    served scores follow the probabilities' layout instead: column j leans towards class j.
    """
    onnx_scores = _onnx.run(session, feeds)["scores"]
    if scores.shape[1] != 1 or onnx_scores.ndim != 2 or onnx_scores.shape[1] != 2:
        return model_bytes, session
    ours = scores[:, 0]
    if np.abs(onnx_scores[:, 0] - ours).mean() < np.abs(onnx_scores[:, 1] - ours).mean():
        model_bytes = _onnx.negate_output(model_bytes, "scores")
        session = _onnx.open_session(model_bytes)
    return model_bytes, session


def _finish(
    model_dir: Path,
    name: str,
    model_bytes: bytes,
    manifest: Manifest,
    report: ParityReport | None,
    dry_run: bool,
    say: Callable[[str], None],
    warnings: Sequence[str] = (),
) -> ConversionResult:
    if dry_run:
        version = _repository.next_version(model_dir)
        say(f"dry run: would write {name}/{version}")
        return ConversionResult(version, model_dir / str(version), manifest, report, list(warnings))
    say(f"writing {name}/{_repository.next_version(model_dir)}")
    version, path = _repository.write_version(model_dir, model_bytes, manifest)
    return ConversionResult(version, path, manifest, report, list(warnings))


def _parity_error(description: str, attempts: list[tuple[str, ParityReport | None, str]]) -> ConversionError:
    first = next(report for _, report, _ in attempts if report is not None)
    tried = "; ".join(f"{precision}: {reason}" for precision, _, reason in attempts)
    return ConversionError(
        f"the ONNX graph of {description} disagrees with the model on the sample ({tried}); "
        f"nothing was written. Worst rows of the {first.precision} graph: {first.worst_text()}",
        details={
            "attempts": [
                {"precision": p, "reason": reason, "parity": r.to_json() if r else None}
                for p, r, reason in attempts
            ],
            "worst": [vars(w) for w in first.worst],
        },
    )
