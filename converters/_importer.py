"""Importing an existing ``.onnx`` file: validate it, read its signature, write it with a manifest.

There is no original model to compare with, so the manifest's parity section says ``"imported"``; what
is checked is that ``onnx.checker`` accepts the graph, onnxruntime loads it, and (with a sample) that it
runs on the sample, whose reference profile is then written like a converted model's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from sluice.converters.artifact.errors import ConversionError
from sluice.converters.artifact.manifest import Manifest
from sluice.converters.artifact.profile import Profile

from . import _onnx, _repository
from ._conversion import ConversionResult, _finish
from ._profile import build_profile
from ._sample import CATEGORICAL, load
from ._sklearn import short_cause

#: Output names converters commonly emit -> manifest role (skl2onnx's defaults included).
_ROLES = _onnx.ROLES | {"output_label": "label", "output_probability": "probabilities", "variable": "value"}
_CLASS_ATTRIBUTES = ("classlabels_int64s", "classlabels_strings")
_PARITY = {
    "status": "imported",
    "note": "no source model to compare with: checked by onnx.checker and loaded by onnxruntime",
}


def _load_checked(path: Path) -> tuple[bytes, Any]:
    import onnx

    try:
        model_bytes = path.read_bytes()
    except OSError as exc:
        raise ConversionError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    try:
        model = onnx.load_from_string(model_bytes)
        onnx.checker.check_model(model)
    except Exception as exc:  # protobuf DecodeError, onnx ValidationError, ...
        raise ConversionError(f"{path}: not a valid ONNX model ({short_cause(exc)})") from exc
    return model_bytes, model


def _class_labels(model: Any) -> list[Any] | None:
    from onnx import helper

    for node in model.graph.node:
        for attribute in node.attribute:
            if attribute.name in _CLASS_ATTRIBUTES:
                values = helper.get_attribute_value(attribute)
                return [v.decode() if isinstance(v, bytes) else int(v) for v in values]
    return None


def import_onnx(
    path: str | Path,
    sample: Any = None,
    *,
    repository: str | Path,
    name: str,
    feature_names: Sequence[str] | None = None,
    dry_run: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ConversionResult:
    """Write ``path`` (an ONNX file) as the next version of ``name``; ``report`` is None.

    A single 2-D input's columns are named by ``feature_names`` (or the sample's columns); a graph with
    one input per feature names each after its input.
    """
    say = progress or (lambda _message: None)
    _repository.check_name(name)
    model_dir = Path(repository) / name
    _repository.next_version(model_dir)
    path = Path(path)
    say(f"validating {path.name}")
    model_bytes, model = _load_checked(path)
    session = _onnx.open_session(model_bytes)
    args = session.get_inputs()
    per_column = len(args) > 1
    width = args[0].shape[1] if len(args[0].shape) == 2 and isinstance(args[0].shape[1], int) else None
    features: list[str] = [a.name for a in args] if per_column else list(feature_names or [])
    roles = dict(_ROLES)
    reference = None
    if sample is not None:
        data = load(
            sample,
            n_features=len(args) if per_column else int(width or np.asarray(sample).shape[1]),
            names_in=features if per_column else None,
            given_names=None if per_column else feature_names,
            column_transformer=per_column,
        )
        features = data.names
        say(f"running the graph on {data.rows} sample rows")
        precision = "float64" if "double" in args[0].type else "float32"
        feeds = data.feeds(np.arange(data.rows), precision, [a.name for a in args])
        outputs = _onnx.run(session, feeds)
        reference = _profile(data, outputs, roles, _class_labels(model))
    elif not per_column and width and not features:
        features = [f"f{i}" for i in range(width)]
    inputs, outputs_spec = _onnx.signature(session, features, roles=roles)
    spec_roles = {t.role for t in outputs_spec}
    task = "classification" if "label" in spec_roles else "regression" if "value" in spec_roles else "other"
    manifest = Manifest(
        inputs=inputs,
        outputs=outputs_spec,
        task=task,
        class_labels=_class_labels(model) if task == "classification" else None,
        source={
            "framework": "onnx",
            "imported_from": path.name,
            "producer": f"{model.producer_name} {model.producer_version}".strip(),
            "opsets": {o.domain or "ai.onnx": o.version for o in model.opset_import},
            "versions": {d: metadata.version(d) for d in ("onnx", "onnxruntime")},
        },
        parity=dict(_PARITY),
        sha256=hashlib.sha256(model_bytes).hexdigest(),
        profile=reference,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    return _finish(model_dir, name, model_bytes, manifest, None, dry_run, say)


def _profile(
    data: Any, outputs: dict[str, np.ndarray], roles: dict[str, str], class_labels: list[Any] | None
) -> Profile:
    by_role = {roles.get(k, "other"): v for k, v in outputs.items()}
    labels = by_role.get("label")
    if labels is not None:
        scores = by_role.get("probabilities", np.zeros((len(labels), 1)))
        known = class_labels or sorted(np.unique(labels).tolist())
    else:
        scores = by_role.get("value", next(iter(outputs.values())))
        known = None
    return build_profile(
        data.columns,
        data.names,
        labels=None if labels is None else labels.ravel(),
        scores=scores,
        class_labels=known,
        categorical=[n for n, k in zip(data.names, data.kinds, strict=True) if k == CATEGORICAL],
    )
