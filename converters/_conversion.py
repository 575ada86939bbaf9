"""``convert``: a fitted model and a sample in, a parity-checked ``model.onnx`` + ``manifest.json`` out."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from server.errors import ConversionError
from server.manifest import Manifest

from . import _onnx, _repository
from ._parity import ParityReport, Tolerance, compare
from ._profile import build_profile
from ._sklearn import TARGET_OPSET, SklearnModel, short_cause

#: Parity runs on at least this many rows (resampling a smaller sample with replacement) ...
MIN_PARITY_ROWS = 1000
#: ... and at most this many (a seeded subset of a larger one), which keeps a check to seconds.
MAX_PARITY_ROWS = 50_000
_SEED = 0
_VERSIONED = ("scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy")


@dataclass
class ConversionResult:
    """``path`` is the version directory written, or the one that would be written on a dry run."""

    version: int
    path: Path
    manifest: Manifest
    report: ParityReport


def _matrix(sample: Any, n_features: int) -> tuple[np.ndarray, list[str] | None]:
    columns = None
    if hasattr(sample, "to_numpy") and hasattr(sample, "columns"):  # a DataFrame, without importing pandas
        columns = [str(c) for c in sample.columns]
        sample = sample.to_numpy()
    try:
        x = np.asarray(sample, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConversionError(f"the sample must be numeric: {short_cause(exc)}") from exc
    if x.ndim != 2:
        raise ConversionError(f"the sample must be a 2-D array (rows x features), got {x.ndim} dimension(s)")
    if x.shape[0] == 0:
        raise ConversionError("the sample has no rows")
    if x.shape[1] != n_features:
        raise ConversionError(
            f"the sample has {x.shape[1]} columns but the model takes {n_features} features"
        )
    return x, columns


def _parity_rows(n: int) -> tuple[np.ndarray, bool]:
    rng = np.random.default_rng(_SEED)
    if n < MIN_PARITY_ROWS:
        # Resample whole rows only: jitter would test inputs the model was never meant to see.
        return rng.integers(0, n, size=MIN_PARITY_ROWS), True
    if n > MAX_PARITY_ROWS:
        return np.sort(rng.choice(n, size=MAX_PARITY_ROWS, replace=False)), True
    return np.arange(n), False


def _predict(adapter: SklearnModel, x: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    try:
        return adapter.predict(x)
    except Exception as exc:  # whatever the estimator raises on this sample (NaN without an imputer, ...)
        raise ConversionError(f"the model cannot predict on the sample: {short_cause(exc)}") from exc


def _versions() -> dict[str, str]:
    found = {}
    for dist in _VERSIONED:
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
) -> ConversionResult:
    """Convert ``model`` to ONNX, check parity on ``sample``, and write the next version of ``name``.

    Tries a float32 graph first (what clients send and the gateway serves fastest); if that misses the
    tolerance it tries a float64 graph, and records the choice in ``manifest.source["options"]``.
    Nothing is written unless parity passes. ``profile=False`` leaves ``manifest.profile`` empty, for
    samples that do not stand for real traffic (such as a synthetic one).
    """
    say = progress or (lambda _message: None)
    _repository.check_name(name)
    tolerance = tolerance or Tolerance()
    model_dir = Path(repository) / name
    _repository.next_version(model_dir)  # fail on an unusable repository before the slow part
    adapter = SklearnModel(model)
    x, columns = _matrix(sample, adapter.n_features)
    features = adapter.feature_names(feature_names if feature_names is not None else columns)
    rows, resampled = _parity_rows(len(x))
    labels, scores = _predict(adapter, x[rows])

    attempts: list[tuple[str, ParityReport | None, str]] = []
    chosen: tuple[bytes, Any, ParityReport] | None = None
    for precision in ("float32", "float64"):
        say(f"converting with skl2onnx ({precision})")
        try:
            model_bytes = adapter.to_onnx(precision)
            model_bytes = _onnx.rename_outputs(model_bytes, {"variable": "value"})
            session = _onnx.open_session(model_bytes)
            say(f"checking parity on {len(rows)} rows")
            outputs = _onnx.run(session, x[rows])
        except ConversionError as exc:
            if precision == "float32":
                raise
            attempts.append((precision, None, exc.message))
            break
        if labels is not None:
            onnx_labels, onnx_scores = outputs.get("label"), outputs.get("probabilities")
            if onnx_labels is None or onnx_scores is None:
                raise ConversionError(
                    f"the converted graph lacks label/probabilities outputs: {list(outputs)}"
                )
        else:
            onnx_labels, onnx_scores = None, outputs.get("value", next(iter(outputs.values())))
        try:
            report = compare(
                rows=rows,
                labels=labels,
                scores=scores,
                onnx_labels=onnx_labels,
                onnx_scores=onnx_scores,
                precision=precision,
                tolerance=tolerance,
            )
        except ValueError as exc:
            raise ConversionError(f"cannot compare the graph with the model: {exc}") from exc
        if report.passed:
            chosen = (model_bytes, session, report)
            break
        attempts.append((precision, report, "; ".join(report.failures)))
        if precision == "float32":
            say(f"float32 parity failed ({'; '.join(report.failures)}); trying float64")
    if chosen is None:
        raise _parity_error(adapter.description, attempts)
    model_bytes, session, report = chosen

    inputs, outputs_spec = _onnx.signature(session, features)
    options: dict[str, Any] = {
        "precision": report.precision,
        "target_opset": dict(TARGET_OPSET),
        "parity_rows": len(rows),
        "parity_rows_resampled": resampled,
    }
    if adapter.task == "classification":
        options["zipmap"] = False
    if attempts:
        options["float32_rejected"] = attempts[0][2]
    reference = None
    if profile:
        same = not resampled
        out_labels, out_scores = (labels, scores) if same else _predict(adapter, x)
        reference = build_profile(
            x, features, labels=out_labels, scores=out_scores, class_labels=adapter.class_labels
        )
    manifest = Manifest(
        inputs=inputs,
        outputs=outputs_spec,
        task=adapter.task,
        class_labels=adapter.class_labels,
        source={
            "framework": "scikit-learn",
            "estimator": adapter.description,
            "versions": _versions(),
            "options": options,
        },
        parity=report.to_json(),
        sha256=hashlib.sha256(model_bytes).hexdigest(),
        profile=reference,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )

    if dry_run:
        version = _repository.next_version(model_dir)
        say(f"dry run: would write {name}/{version}")
        return ConversionResult(version, model_dir / str(version), manifest, report)
    say(f"writing {name}/{_repository.next_version(model_dir)}")
    version, path = _repository.write_version(model_dir, model_bytes, manifest)
    return ConversionResult(version, path, manifest, report)


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
