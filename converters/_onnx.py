"""ONNX graph helpers: output naming, loading into onnxruntime, and the signature it actually exposes.

The manifest's signature is read back from an onnxruntime session rather than predicted from the
converter's intent, so what it records is what the gateway will find when it loads the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sluice.converters.artifact.datatypes import ONNX_TO_V2
from sluice.converters.artifact.errors import ConversionError
from sluice.converters.artifact.manifest import TensorSpec

from ._framework import short_cause

#: Output name -> role, for the names our converters emit.
ROLES = {"label": "label", "probabilities": "probabilities", "value": "value"}


def output_names(model_bytes: bytes) -> list[str]:
    import onnx

    return [o.name for o in onnx.load_from_string(model_bytes).graph.output]


def rename_outputs(model_bytes: bytes, renames: dict[str, str]) -> bytes:
    """Rename graph outputs (and every reference to them); names not in the graph are ignored."""
    return rename(model_bytes, renames, kind="output")


def rename(model_bytes: bytes, renames: dict[str, str], *, kind: str) -> bytes:
    """Rename graph inputs or outputs (``kind``) and every reference to them; unknown names are ignored.

    skl2onnx turns a column called "monthly charges" into an input called "monthly_charges"; renaming it
    back lets a v1 ``{"monthly charges": ...}`` object find its input.
    """
    import onnx

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    ends = graph.output if kind == "output" else graph.input
    present = {o.name for o in ends}
    renames = {old: new for old, new in renames.items() if old in present and old != new}
    if not renames:
        return model_bytes
    taken = {v.name for v in graph.input} | {v.name for v in graph.initializer}
    taken |= {o for n in graph.node for o in n.output}
    clash = sorted(set(renames.values()) & (taken - set(renames)))
    if clash:
        return model_bytes  # keep the converter's names rather than create an ambiguous graph
    _rename_in_graph(graph, renames)
    for value in list(graph.output) + list(graph.input) + list(graph.value_info):
        value.name = renames.get(value.name, value.name)
    return bytes(model.SerializeToString())


def _rename_in_graph(graph: Any, renames: dict[str, str]) -> None:
    for node in graph.node:
        node.input[:] = [renames.get(i, i) for i in node.input]
        node.output[:] = [renames.get(o, o) for o in node.output]
        for attribute in node.attribute:  # subgraphs (Loop, If, Scan) may read outer names
            for sub in [attribute.g, *attribute.graphs]:
                _rename_in_graph(sub, renames)


def free_batch_dim(model_bytes: bytes) -> bytes:
    """Outputs whose first dimension is a fixed number get a symbolic batch dimension instead.

    onnxmltools declares a LightGBM classifier's label as shape ``[1]`` although it has one row per
    input row; the manifest (and onnxruntime's output check) would believe the declaration.
    """
    import onnx

    model = onnx.load_from_string(model_bytes)
    fixed = [
        o
        for o in model.graph.output
        if o.type.HasField("tensor_type")
        and o.type.tensor_type.shape.dim
        and o.type.tensor_type.shape.dim[0].HasField("dim_value")
    ]
    if not fixed:
        return model_bytes
    for output in fixed:
        output.type.tensor_type.shape.dim[0].dim_param = "N"
    return bytes(model.SerializeToString())


def open_session(model_bytes: bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: warnings here would be printed to the user's terminal
    try:
        return ort.InferenceSession(model_bytes, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph classes
        raise ConversionError(f"onnxruntime cannot load the converted graph: {short_cause(exc)}") from exc


def run(session: Any, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run ``session`` on ``feeds`` (already of the input types); outputs by name."""
    try:
        values = session.run(None, feeds)
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


def signature(
    session: Any, features: Sequence[str], *, roles: dict[str, str] | None = None
) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(inputs, outputs) as the session exposes them.

    One input: it names all ``features`` (its columns). One input per feature: each names its own.
    """
    args = session.get_inputs()
    if len(args) == 1 or not features:
        inputs = [_spec(a, features=features if len(args) == 1 else ()) for a in args]
    else:
        inputs = [_spec(a, features=(f,)) for a, f in zip(args, features, strict=True)]
    table = roles or ROLES
    outputs = [_spec(arg, role=table.get(arg.name, "other")) for arg in session.get_outputs()]
    return inputs, outputs


def negate_output(model_bytes: bytes, name: str) -> bytes:
    """Replace output ``name`` by its negation (a ``Neg`` node appended under the same name)."""
    import onnx
    from onnx import helper

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    raw = f"{name}_before_neg"
    _rename_in_graph(graph, {name: raw})
    graph.node.append(helper.make_node("Neg", [raw], [name], name=f"{name}_neg"))
    return bytes(model.SerializeToString())
