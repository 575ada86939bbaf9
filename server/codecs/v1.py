"""The v1 (TF Serving style) ``:predict`` bodies: ``{"instances": [...]}`` or columnar ``{"inputs": ...}``
in, ``{"predictions": [...]}`` out.

The same checks as v2 (``sluice.server.codecs.v2``), reached from rows instead of tensors: every row is
laid out in the signature's order (objects keyed by input, or by feature name for a single 2-D input) and cast
to the signature's dtypes, or a ``SluiceError`` names the problem.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from sluice.converters.artifact.errors import (
    BadRequestError,
    BodyTooLargeError,
    InternalError,
    InvalidInputError,
)
from sluice.converters.artifact.manifest import TensorSpec
from sluice.server.codecs.fields import check_shape, load_object, quoted_names
from sluice.server.codecs.tensors import cast, json_rows, json_values
from sluice.server.codecs.v2 import NUMPY_OPT, Array, InferRequest

__all__ = ["decode_v1", "encode_v1"]


def decode_v1(
    body: bytes,
    *,
    signature: Sequence[TensorSpec],
    max_elements: int = 16_777_216,
    allow_nan: bool = False,
) -> InferRequest:
    """Decode a v1 ``{"instances": [...]}`` (or columnar ``{"inputs": ...}``) request."""
    doc = load_object(body)
    if "instances" in doc:
        instances = doc["instances"]
        if type(instances) is not list or not instances:
            raise BadRequestError("'instances' must be a non-empty list")
        if type(instances[0]) is dict:
            columns = _columns_from_objects(instances, signature)
        elif any(type(row) is dict for row in instances):
            raise BadRequestError("'instances' mixes objects and rows")
        elif len(signature) == 1:
            columns = {signature[0].name: instances}
        else:
            raise InvalidInputError(
                f"model has inputs {quoted_names(signature)}: send instances as objects keyed by input name"
            )
    elif "inputs" in doc:
        columns = _columns_from_inputs(doc["inputs"], signature)
    else:
        raise BadRequestError("v1 body needs 'instances' (or 'inputs')")

    rows = len(next(iter(columns.values())))
    maybe_bool = b"true" in body or b"false" in body
    inputs: dict[str, Array] = {}
    for spec in signature:
        name = spec.name
        column = columns[name]
        if len(column) != rows:
            raise InvalidInputError(f"input {name!r} has {len(column)} rows, expected {rows}")
        fixed = spec.shape[1:]
        if all(d >= 0 for d in fixed):
            shape = (rows, *fixed)
            count = math.prod(shape)
            if count > max_elements:
                raise BodyTooLargeError(f"input {name!r}: {count} elements exceed the limit {max_elements}")
            arr = json_values(name, column, spec.datatype, maybe_bool, InvalidInputError)
            if arr.size != count:
                raise InvalidInputError(
                    f"input {name!r}: instances hold {arr.size // rows} values per row, model expects shape "
                    f"{list(spec.shape)}",
                    details={"input": name, "expected": list(spec.shape)},
                )
            arr = arr.reshape(shape)
        else:
            arr = json_values(name, column, spec.datatype, maybe_bool, InvalidInputError)
            if arr.size > max_elements:
                raise BodyTooLargeError(
                    f"input {name!r}: {arr.size} elements exceed the limit {max_elements}"
                )
            check_shape(name, arr.shape, spec)
        inputs[name] = cast(name, arr, spec.datatype, allow_nan)
    return InferRequest(inputs=inputs, rows=rows)


def _as_list(value: Any) -> list[Any]:
    return value.tolist() if isinstance(value, np.ndarray) else list(value)


def encode_v1(outputs: dict[str, Array], output_specs: Sequence[TensorSpec]) -> bytes:
    """``{"predictions": [...]}``: per row, the row's value, or a dict when the model has several outputs."""
    names = [s.name for s in output_specs if s.name in outputs] or list(outputs)
    if len(names) == 1:
        return orjson.dumps({"predictions": json_rows(outputs[names[0]])}, option=NUMPY_OPT)
    # Per-row dicts need Python values: orjson serialises numpy arrays, not numpy scalars.
    columns = {name: _as_list(json_rows(outputs[name])) for name in names}
    rows = len(columns[names[0]])
    if any(len(c) != rows for c in columns.values()):
        raise InternalError("the model's outputs disagree on the number of rows")
    predictions = [{name: columns[name][i] for name in names} for i in range(rows)]
    return orjson.dumps({"predictions": predictions}, option=NUMPY_OPT)


def _columns_from_objects(instances: list[Any], signature: Sequence[TensorSpec]) -> dict[str, list[Any]]:
    if any(type(row) is not dict for row in instances):
        raise BadRequestError("'instances' mixes objects and rows")
    spec = signature[0]
    if len(signature) == 1 and spec.features and len(spec.shape) == 2:
        keys, kind = spec.features, "feature"
    else:
        keys, kind = tuple(s.name for s in signature), "input"
    wanted = set(keys)
    for i, row in enumerate(instances):
        if row.keys() != wanted:
            missing = [k for k in keys if k not in row]
            if missing:
                raise InvalidInputError(
                    f"instance {i} has no {kind} {missing[0]!r}; expected {', '.join(map(repr, keys))}",
                    details={kind: missing[0], "row": i},
                )
            unknown = next(k for k in row if k not in wanted)
            raise InvalidInputError(
                f"instance {i} has unknown {kind} {unknown!r}; expected {', '.join(map(repr, keys))}",
                details={kind: unknown, "row": i},
            )
    if kind == "feature":
        # itemgetter lays a row out in feature order in C; one feature would come back unwrapped.
        get = operator.itemgetter(*keys)
        return {
            spec.name: [get(row) for row in instances] if len(keys) > 1 else [[get(row)] for row in instances]
        }
    return {name: [row[name] for row in instances] for name in keys}


def _columns_from_inputs(raw: Any, signature: Sequence[TensorSpec]) -> dict[str, list[Any]]:
    """TF Serving's columnar form: a list for a single-input model, else an object keyed by input name."""
    if type(raw) is list and raw and len(signature) == 1:
        return {signature[0].name: raw}
    if type(raw) is not dict:
        raise BadRequestError("'inputs' must be a non-empty list (single-input model) or an object")
    unknown = [k for k in raw if all(s.name != k for s in signature)]
    missing = [s.name for s in signature if s.name not in raw]
    if unknown or missing:
        raise InvalidInputError(
            f"{'unknown' if unknown else 'missing'} input {(unknown or missing)[0]!r}; "
            f"model expects inputs: {quoted_names(signature)}"
        )
    if any(type(v) is not list or not v for v in raw.values()):
        raise BadRequestError("each column of 'inputs' must be a non-empty list")
    return {s.name: raw[s.name] for s in signature}
