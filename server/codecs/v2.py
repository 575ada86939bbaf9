"""The inference wire formats: v2 (Open Inference Protocol) and v1 request bodies to numpy, and back.

Owns every rule about what a request may say and how a response is laid out: JSON tensors, the binary
tensor extension's JSON side, request parameters, the requested outputs, and the checks that turn a
request into arrays of exactly the model signature's dtypes (or a ``SluiceError`` naming the problem).
Pure bytes <-> numpy: routes parse HTTP headers and hand over bytes; raw tensor layout and content
encodings live in ``sluice.server.codecs.binary``, value conversion and casts in
``sluice.server.codecs.tensors``, the request's small parts in ``sluice.server.codecs.fields``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy.typing as npt
import orjson

from sluice.converters.artifact.datatypes import ITEM_SIZES, NUMPY_DTYPES, can_cast, v2_datatype
from sluice.converters.artifact.errors import (
    BadRequestError,
    BodyTooLargeError,
    InternalError,
    InvalidInputError,
)
from sluice.converters.artifact.manifest import TensorSpec
from sluice.server.codecs.binary import decompress, read_bytes, read_fixed, write_tensor
from sluice.server.codecs.fields import (
    RequestedOutput,
    check_shape,
    load_object,
    parameters,
    quoted_names,
    requested_outputs,
    short,
)
from sluice.server.codecs.tensors import cast, json_data, json_values, nulls_as_nan

__all__ = [
    "InferRequest",
    "RequestedOutput",
    "decode_v2",
    "decompress",
    "encode_v2",
]

Array = npt.NDArray[Any]

_JSON = {"content-type": "application/json"}
NUMPY_OPT = orjson.OPT_SERIALIZE_NUMPY
_NO_TRAILER = memoryview(b"")


@dataclass(slots=True)
class InferRequest:
    """A decoded request: inputs in signature order with the signature's dtypes, plus what to send back."""

    inputs: dict[str, Array]
    rows: int
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: list[RequestedOutput] | None = None
    binary_output: bool = False
    timeout_us: int | None = None
    priority: int = 0


def decode_v2(
    body: bytes,
    *,
    header_length: int | None,
    signature: Sequence[TensorSpec],
    max_elements: int = 16_777_216,
    allow_nan: bool = False,
    output_names: Sequence[str] | None = None,
) -> InferRequest:
    """Decode a v2 inference request body (JSON, optionally followed by a binary trailer)."""
    if header_length is not None:
        if header_length < 0 or header_length > len(body):
            raise BadRequestError(
                f"Inference-Header-Content-Length {header_length} is outside the body's {len(body)} bytes"
            )
        if header_length == 0:
            return _decode_raw(body, signature, max_elements, allow_nan)
        view = memoryview(body)
        doc = load_object(view[:header_length])
        trailer = view[header_length:]
        json_end = header_length
    else:
        doc = load_object(body)
        trailer = _NO_TRAILER
        json_end = len(body)

    params = doc.get("parameters")
    if params is None:
        params, binary_output, timeout, priority = {}, False, None, 0
    else:
        binary_output, timeout, priority = parameters(params)
    request_id = doc.get("id")
    if request_id is not None and type(request_id) is not str:
        raise BadRequestError("'id' must be a string")
    outputs = requested_outputs(doc.get("outputs"), binary_output, output_names)

    raw_inputs = doc.get("inputs")
    if type(raw_inputs) is not list or not raw_inputs:
        raise BadRequestError("'inputs' must be a non-empty list")
    specs = {s.name: s for s in signature}
    arrays: dict[str, Array] = {}
    total = offset = 0
    rows = -1
    maybe_bool: bool | None = None
    # One pass: every input's size is checked against max_elements (running total) before its array
    # exists, so memory stays bounded without a second walk over the inputs.
    for item in raw_inputs:
        spec, datatype, shape, count, data, size = _parse_input(item, specs, max_elements)
        name = spec.name
        if name in arrays:
            raise InvalidInputError(f"input {name!r} appears more than once", details={"input": name})
        total += count
        if total > max_elements:
            raise BodyTooLargeError(f"request declares more than {max_elements} elements in total")
        if shape:
            if rows < 0:
                rows = shape[0]
            elif shape[0] != rows:
                raise InvalidInputError(
                    f"inputs disagree on the batch size: {name!r} has {shape[0]} rows, others {rows}",
                    details={"input": name},
                )
        if size is None:
            if maybe_bool is None:
                # Bools are ints to numpy, so [1.0, true] passes dtype inference; a byte scan of the
                # JSON keeps the exact per-element check off requests that cannot contain one.
                maybe_bool = body.find(b"true", 0, json_end) >= 0 or body.find(b"false", 0, json_end) >= 0
            if allow_nan and body.find(b"null", 0, json_end) >= 0:
                data = nulls_as_nan(name, data, datatype)  # JSON has no NaN: null is a missing value
            arr = json_values(name, data, datatype, maybe_bool, BadRequestError)
            if arr.size != count:
                raise BadRequestError(
                    f"input {name!r}: shape {list(shape)} needs {count} elements, data has {arr.size}",
                    details={"input": name},
                )
            arr = arr.reshape(shape)
        else:
            end = offset + size
            if end > len(trailer):
                raise BadRequestError(
                    f"input {name!r}: binary data ends before its {size} bytes "
                    f"(the body carries {len(trailer)} bytes after the JSON)",
                    details={"input": name},
                )
            chunk = trailer[offset:end]
            offset = end
            if datatype == "BYTES":
                arr = read_bytes(name, chunk, shape, count)
            else:
                arr = read_fixed(chunk, datatype, shape)
        arrays[name] = cast(name, arr, spec.datatype, allow_nan)
    if len(arrays) != len(signature):
        missing = [s.name for s in signature if s.name not in arrays]
        raise InvalidInputError(
            f"missing input {missing[0]!r}; model expects inputs: {quoted_names(signature)}",
            details={"missing": missing, "expected": [s.name for s in signature]},
        )
    if offset != len(trailer):
        raise BadRequestError(
            f"inputs declare {offset} bytes of binary data, the body carries {len(trailer)} after the JSON"
        )
    if len(arrays) > 1:
        arrays = {s.name: arrays[s.name] for s in signature}
    return InferRequest(
        inputs=arrays,
        rows=rows if rows >= 0 else 1,
        id=request_id,
        parameters=params,
        outputs=outputs,
        binary_output=binary_output,
        timeout_us=timeout,
        priority=priority,
    )


def encode_v2(
    *,
    model_name: str,
    model_version: str,
    request: InferRequest,
    outputs: dict[str, Array],
    output_specs: Sequence[TensorSpec],
) -> tuple[bytes, dict[str, str]]:
    """The v2 response body and its content headers; binary outputs follow the JSON in order."""
    if request.outputs is None:
        selected = [(s.name, request.binary_output) for s in output_specs]
    else:
        selected = [(o.name, o.binary) for o in request.outputs]
    entries: list[dict[str, Any]] = []
    blobs: list[bytes | memoryview] = []
    for name, binary in selected:
        arr = outputs.get(name)
        if arr is None:
            if any(s.name == name for s in output_specs):
                raise InternalError(f"the model produced no output {name!r}")
            raise InvalidInputError(
                f"unknown output {name!r}; model has outputs: {quoted_names(output_specs)}",
                details={"output": name},
            )
        try:
            datatype = v2_datatype(arr.dtype)
        except ValueError as exc:
            raise InternalError(f"output {name!r}: {exc}") from exc
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if binary:
            blob = write_tensor(arr, datatype)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = json_data(arr.ravel(), datatype)
        entries.append(entry)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request.id:
        doc["id"] = request.id
    doc["outputs"] = entries
    header = orjson.dumps(doc, option=NUMPY_OPT)
    if not blobs:
        return header, dict(_JSON)
    return b"".join([header, *blobs]), {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header)),
    }


# -- request side -----------------------------------------------------------------------------------


def _parse_input(
    item: Any, specs: dict[str, TensorSpec], max_elements: int
) -> tuple[TensorSpec, str, tuple[int, ...], int, Any, int | None]:
    """One entry of 'inputs' checked against the signature: (spec, datatype, shape, count, data, size)."""
    if type(item) is not dict:
        raise BadRequestError("each entry of 'inputs' must be an object")
    name = item.get("name")
    if type(name) is not str:
        raise BadRequestError("an input has no 'name'")
    datatype = item.get("datatype")
    raw_shape = item.get("shape")
    if datatype is None or raw_shape is None:
        missing = "datatype" if datatype is None else "shape"
        raise BadRequestError(f"input {name!r} has no {missing!r}", details={"input": name})
    if type(datatype) is not str or datatype not in NUMPY_DTYPES:
        raise BadRequestError(f"input {name!r}: unknown datatype {datatype!r}", details={"input": name})
    if type(raw_shape) is not list:
        raise BadRequestError(f"input {name!r}: shape must be a list", details={"input": name})
    largest = 0
    for d in raw_shape:
        if type(d) is not int or d < 0:
            raise BadRequestError(
                f"input {name!r}: shape must be a list of non-negative integers, got {short(raw_shape)}",
                details={"input": name},
            )
        largest = max(largest, d)
    shape = tuple(raw_shape)
    count = math.prod(shape)
    # A huge dim beside a zero dim has a small product but is still nonsense worth refusing early.
    if count > max_elements or largest > max_elements:
        raise BodyTooLargeError(
            f"input {name!r}: shape {short(raw_shape)} exceeds the limit of {max_elements} elements",
            details={"input": name, "max_elements": max_elements},
        )
    spec = specs.get(name)
    if spec is None:
        raise InvalidInputError(
            f"unknown input {name!r}; model expects inputs: {quoted_names(specs.values())}",
            details={"input": name, "expected": list(specs)},
        )
    if datatype != spec.datatype and not can_cast(datatype, spec.datatype):
        raise InvalidInputError(
            f"input {name!r}: datatype {datatype} cannot be used, model expects {spec.datatype}",
            details={"input": name, "expected": spec.datatype, "got": datatype},
        )
    expected = spec.shape
    # Common case in C: same rank and the non-batch dims exactly as declared.
    if (
        len(shape) != len(expected)
        or shape[1:] != expected[1:]
        or (shape and expected[0] != -1 and expected[0] != shape[0])
    ):
        check_shape(name, shape, spec)
    size = None
    params = item.get("parameters")
    if params is not None:
        if type(params) is not dict:
            raise BadRequestError(f"input {name!r}: 'parameters' must be an object", details={"input": name})
        size = params.get("binary_data_size")
        if size is not None and (type(size) is not int or size < 0):
            raise BadRequestError(
                f"input {name!r}: binary_data_size must be a non-negative integer, got {short(size)}",
                details={"input": name},
            )
    data = item.get("data")
    if size is not None:
        if data is not None:
            raise BadRequestError(
                f"input {name!r} has both 'data' and binary_data_size", details={"input": name}
            )
        if datatype != "BYTES" and size != count * ITEM_SIZES[datatype]:
            raise BadRequestError(
                f"input {name!r}: binary_data_size is {size} bytes, shape {list(shape)} of {datatype} "
                f"needs {count * ITEM_SIZES[datatype]}",
                details={"input": name, "expected": count * ITEM_SIZES[datatype], "got": size},
            )
    elif type(data) is not list:
        raise BadRequestError(
            f"input {name!r} needs 'data' as a list or parameters.binary_data_size", details={"input": name}
        )
    return spec, datatype, shape, count, data, size


def _decode_raw(
    body: bytes, signature: Sequence[TensorSpec], max_elements: int, allow_nan: bool
) -> InferRequest:
    """Inference-Header-Content-Length 0: the body is one input's raw bytes and carries no shape."""
    if len(signature) != 1:
        raise BadRequestError(
            f"a body without JSON header needs a single-input model; this one has {quoted_names(signature)}"
        )
    spec = signature[0]
    fixed = spec.shape[1:]
    if spec.datatype == "BYTES" or not spec.shape or any(d < 0 for d in fixed):
        raise BadRequestError(
            f"a body without JSON header needs fixed non-batch dims and a fixed-size datatype; input "
            f"{spec.name!r} is {spec.datatype} {list(spec.shape)}"
        )
    row_bytes = math.prod(fixed) * ITEM_SIZES[spec.datatype]
    if not body or row_bytes == 0 or len(body) % row_bytes:
        raise BadRequestError(
            f"raw body of {len(body)} bytes is not a whole number of {spec.datatype} {list(spec.shape)} rows "
            f"({row_bytes} bytes each)"
        )
    rows = len(body) // row_bytes
    shape = (rows, *fixed)
    check_shape(spec.name, shape, spec)
    if math.prod(shape) > max_elements:
        raise BodyTooLargeError(f"input {spec.name!r}: raw body exceeds the limit of {max_elements} elements")
    arr = cast(spec.name, read_fixed(memoryview(body), spec.datatype, shape), spec.datatype, allow_nan)
    return InferRequest(inputs={spec.name: arr}, rows=rows)
