"""Importing an existing ``.onnx`` file: validate it, read its signature, write it with a manifest.

There is no original model to compare with, so the manifest's parity section says ``"imported"``; what
is checked is that ``onnx.checker`` accepts the graph, onnxruntime loads it, and (with a sample) that it
runs on the sample, whose reference profile is then written like a converted model's.

Output roles are guessed from output names (``label``, ``probabilities``, ``value`` and skl2onnx's
``output_label``, ``output_probability``, ``variable``; anything else is ``other``); ``output_roles``
says them instead. A classifier left without a ``probabilities`` output is imported with a warning:
the monitor watches prediction drift on that output, so without one prediction drift is off.

``scores`` is not accepted as a role, not even as an alias of ``probabilities``: the manifest's
``probabilities`` are class probabilities (shadow comparisons and profiles read them so), and decision
scores or logits are served as ``other``, as the converter serves an SVC's ``scores``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from sluice.converters.artifact.errors import ConversionError
from sluice.converters.artifact.manifest import OUTPUT_ROLES, Manifest
from sluice.converters.artifact.profile import Profile

from . import _onnx, _repository
from ._conversion import ConversionResult, _finish
from ._framework import short_cause
from ._profile import build_profile, small_sample_warning
from ._sample import CATEGORICAL, load

#: Output names converters commonly emit -> manifest role (skl2onnx's defaults included).
_ROLES = _onnx.ROLES | {"output_label": "label", "output_probability": "probabilities", "variable": "value"}
_CLASS_ATTRIBUTES = ("classlabels_int64s", "classlabels_strings")
#: Roles that at most one output may hold: the gateway and the monitor look each up by role.
_SINGLE_ROLES = ("label", "probabilities", "value")
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
    output_roles: Mapping[str, str] | None = None,
    dry_run: bool = False,
    progress: Callable[[str], None] | None = None,
    calibrate: Callable[[Profile], Mapping[str, Any]] | None = None,
) -> ConversionResult:
    """Write ``path`` (an ONNX file) as the next version of ``name``; ``report`` is None.

    A single 2-D input's columns are named by ``feature_names`` (or the sample's columns); a graph with
    one input per feature names each after its input. ``output_roles`` maps output names to manifest
    roles (label, probabilities, value, other), overriding the guess from names; an unknown name or
    role is a ``ConversionError``. What the user should know although the file was imported is in the
    result's ``warnings``.
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
    roles = _roles([o.name for o in session.get_outputs()], output_roles or {})
    reference = None
    if sample is not None:
        data = load(
            sample,
            n_features=len(args) if per_column else int(width or np.asarray(sample).shape[1]),
            names_in=features if per_column else None,
            given_names=None if per_column else feature_names,
            per_column_inputs=per_column,
        )
        features = data.names
        say(f"running the graph on {data.rows} sample rows")
        precision = "float64" if "double" in args[0].type else "float32"
        feeds = data.feeds(np.arange(data.rows), precision, [a.name for a in args])
        outputs = _onnx.run(session, feeds)
        reference = _profile(data, outputs, roles, _class_labels(model))
        if calibrate is not None:  # the monitor's, as for convert()
            reference = replace(reference, calibration=calibrate(reference))
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
    warnings = small_sample_warning(reference)
    if task == "classification" and "probabilities" not in spec_roles:
        warnings.append(_no_probabilities(roles))
    return _finish(model_dir, name, model_bytes, manifest, None, dry_run, say, warnings)


def _roles(outputs: Sequence[str], given: Mapping[str, str]) -> dict[str, str]:
    """Output name -> role: the guess from names, overridden by ``given``; checked."""
    for output, role in given.items():
        if output not in outputs:
            raise ConversionError(
                f"output role for {output!r}: the graph has no such output; its outputs are "
                f"{', '.join(map(repr, outputs))}"
            )
        if role not in OUTPUT_ROLES:
            hint = " (decision scores and logits are 'other')" if role == "scores" else ""
            raise ConversionError(
                f"unknown output role {role!r} for {output!r}: roles are label, probabilities, value, "
                f"other{hint}"
            )
    roles = {o: given.get(o, _ROLES.get(o, "other")) for o in outputs}
    for role in _SINGLE_ROLES:
        holders = [o for o in outputs if roles[o] == role]
        if len(holders) > 1:
            raise ConversionError(
                f"outputs {', '.join(map(repr, holders))} all have role {role!r}, which only one output "
                "may have: give the others the role 'other'"
            )
    return roles


def _no_probabilities(roles: Mapping[str, str]) -> str:
    others = [o for o, role in roles.items() if role == "other"]
    which = f" (its outputs {', '.join(map(repr, others))} are 'other')" if others else ""
    return (
        f"the classifier has no output with role 'probabilities'{which}, so prediction drift will be "
        "off; if an output holds class probabilities, say so with --output-role NAME=probabilities "
        "(output_roles={NAME: 'probabilities'} from Python)"
    )


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
