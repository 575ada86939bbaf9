"""The small parts of a v2 request: the top-level object, its parameters, requested outputs, shapes.

Helpers of ``sluice.server.codecs.v2`` (and ``v1``): each checks one part and raises a 4xx naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from sluice.converters.artifact.errors import BadRequestError, InvalidInputError
from sluice.converters.artifact.manifest import TensorSpec


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    """One output the client asked for, and whether it goes back in the binary trailer."""

    name: str
    binary: bool


def load_object(data: bytes | memoryview) -> dict[str, Any]:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"body is not valid JSON: {exc}") from exc
    if type(doc) is not dict:
        raise BadRequestError("body must be a JSON object")
    return doc


def parameters(params: Any) -> tuple[bool, int | None, int]:
    if type(params) is not dict:
        raise BadRequestError("'parameters' must be an object")
    binary_output = params.get("binary_data_output", False)
    if type(binary_output) is not bool:
        raise BadRequestError("parameter 'binary_data_output' must be true or false")
    timeout = params.get("timeout")
    if timeout is not None and (type(timeout) is not int or timeout < 0):
        raise BadRequestError(f"parameter 'timeout' must be a non-negative integer (µs), got {timeout!r}")
    priority = params.get("priority", 0)
    if type(priority) is not int or priority < 0:
        raise BadRequestError(f"parameter 'priority' must be a non-negative integer, got {priority!r}")
    return binary_output, timeout, priority


def check_shape(name: str, shape: tuple[int, ...], spec: TensorSpec) -> None:
    expected = spec.shape
    if len(shape) != len(expected) or any(e >= 0 and d != e for d, e in zip(shape, expected, strict=True)):
        raise InvalidInputError(
            f"input {name!r}: shape {list(shape)} does not fit the model's {list(expected)} (-1 = any)",
            details={"input": name, "expected": list(expected), "got": list(shape)},
        )


def requested_outputs(
    raw: Any, binary_default: bool, output_names: Sequence[str] | None
) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if type(raw) is not list:
        raise BadRequestError("'outputs' must be a list")
    if not raw:
        return None
    result: list[RequestedOutput] = []
    seen: set[str] = set()
    for item in raw:
        if type(item) is not dict or type(item.get("name")) is not str:
            raise BadRequestError("each requested output must be an object with a 'name'")
        name = item["name"]
        if name in seen:
            raise BadRequestError(f"output {name!r} is requested more than once")
        seen.add(name)
        if output_names is not None and name not in output_names:
            raise InvalidInputError(
                f"unknown output {name!r}; model has outputs: {', '.join(map(repr, output_names))}",
                details={"output": name, "expected": list(output_names)},
            )
        binary = binary_default
        params = item.get("parameters")
        if params is not None:
            flag = params.get("binary_data") if type(params) is dict else None
            if type(params) is not dict or (flag is not None and type(flag) is not bool):
                raise BadRequestError(f"output {name!r}: parameters.binary_data must be true or false")
            if flag is not None:
                binary = flag
        result.append(RequestedOutput(name, binary))
    return result


def quoted_names(specs: Any) -> str:
    return ", ".join(repr(s.name) for s in specs)


def short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
