"""ONNX graph helpers: output naming, loading into onnxruntime, and the signature it actually exposes.

The manifest's signature is read back from an onnxruntime session rather than predicted from the
converter's intent, so what it records is what the gateway will find when it loads the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from server.datatypes import ONNX_TO_V2
from server.errors import ConversionError
from server.manifest import TensorSpec

from ._sklearn import short_cause

#: Output name -> role, for the names our converters emit.
ROLES = {"label": "label", "probabilities": "probabilities", "value": "value"}


def rename_outputs(model_bytes: bytes, renames: dict[str, str]) -> bytes:
    """Rename graph outputs (and every reference to them); names not in the graph are ignored."""
    import onnx

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    present = {o.name for o in graph.output}
    renames = {old: new for old, new in renames.items() if old in present and old != new}
    if not renames:
        return model_bytes
    taken = {v.name for v in graph.input} | {o for n in graph.node for o in n.output}
    clash = sorted(set(renames.values()) & taken)
    if clash:
        return model_bytes  # keep the converter's names rather than create an ambiguous graph
    for node in graph.node:
        node.input[:] = [renames.get(i, i) for i in node.input]
        node.output[:] = [renames.get(o, o) for o in node.output]
    for value in list(graph.output) + list(graph.value_info):
        value.name = renames.get(value.name, value.name)
    return bytes(model.SerializeToString())


def open_session(model_bytes: bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: warnings here would be printed to the user's terminal
    try:
        return ort.InferenceSession(model_bytes, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph classes
        raise ConversionError(f"onnxruntime cannot load the converted graph: {short_cause(exc)}") from exc


def run(session: Any, x: np.ndarray) -> dict[str, np.ndarray]:
    name = session.get_inputs()[0].name
    dtype = np.float64 if session.get_inputs()[0].type == "tensor(double)" else np.float32
    try:
        values = session.run(None, {name: np.ascontiguousarray(x, dtype=dtype)})
    except Exception as exc:
        raise ConversionError(f"onnxruntime failed to run the converted graph: {short_cause(exc)}") from exc
    return {o.name: np.asarray(v) for o, v in zip(session.get_outputs(), values, strict=True)}


def _spec(arg: Any, *, features: Sequence[str] = (), role: str = "other") -> TensorSpec:
    try:
        datatype = ONNX_TO_V2[arg.type]
    except KeyError:
        raise ConversionError(
            f"the graph's {arg.name!r} has type {arg.type}, which sluice cannot serve"
        ) from None
    # onnxruntime reports a symbolic or unknown dimension as a string or None.
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape)
    return TensorSpec(name=arg.name, datatype=datatype, shape=shape, features=tuple(features), role=role)


def signature(session: Any, features: Sequence[str]) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(inputs, outputs) as the session exposes them; the one 2-D input names its columns."""
    inputs = [_spec(arg, features=features) for arg in session.get_inputs()]
    outputs = [_spec(arg, role=ROLES.get(arg.name, "other")) for arg in session.get_outputs()]
    return inputs, outputs
