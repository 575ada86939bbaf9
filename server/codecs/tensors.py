"""Tensor values: JSON data to numpy arrays of a model signature's dtype, and arrays back to JSON.

Owns the value rules shared by the v1 and v2 codecs: which JSON values fit a datatype, safe casts to
the signature's dtype (integer ranges, float overflow), NaN/Inf checks, and the forms orjson writes
directly. Raw bytes are ``sluice.server.codecs.binary``'s; request structure is ``sluice.server.codecs.v2``'s.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from sluice.converters.artifact.datatypes import FLOATS, INTEGERS, NUMPY_DTYPES, v2_datatype
from sluice.converters.artifact.errors import BadRequestError, InvalidInputError, SluiceError

Array = npt.NDArray[Any]

# A float array whose largest magnitude is within the target's max has no NaN (max propagates it), no
# Inf and nothing the cast would overflow. abs+max never raises FP warnings; a dot product would be
# cheaper but overflows (and warns) on large finite values.
_LIMITS = {d: float(np.finfo(NUMPY_DTYPES[d]).max) for d in FLOATS}
_abs = np.abs
_max = np.maximum.reduce
# numpy dtype kinds that JSON data inferred by np.asarray may have, per declared datatype.
_KINDS = {"BOOL": "b", **dict.fromkeys(FLOATS, "fiu"), **dict.fromkeys(INTEGERS, "iu")}


def json_values(
    name: str, data: list[Any], datatype: str, maybe_bool: bool, error: type[SluiceError]
) -> Array:
    """JSON ``data`` as an array of a dtype fitting ``datatype``; shape as nested (BYTES: flat)."""
    if datatype == "BYTES":
        flat = _flat_strings(name, data, error)
        arr = np.empty(len(flat), dtype=object)
        arr[:] = flat
        return arr
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError) as exc:
        raise BadRequestError(
            f"input {name!r}: data is ragged (nested lists of different lengths)", details={"input": name}
        ) from exc
    if not arr.size:
        return arr.astype(NUMPY_DTYPES[datatype])
    if arr.dtype.kind not in _KINDS[datatype] or (maybe_bool and datatype != "BOOL" and _has_bool(data)):
        wanted = "true/false" if datatype == "BOOL" else "integers" if datatype in INTEGERS else "numbers"
        raise error(f"input {name!r}: {datatype} data must be {wanted}", details={"input": name})
    if datatype in INTEGERS and not _fits(arr, NUMPY_DTYPES[datatype]):
        raise error(f"input {name!r}: a value is out of range for {datatype}", details={"input": name})
    return arr


#: Deepest nesting accepted in JSON tensor data: numpy's own limit on dimensions.
MAX_DEPTH = 64


def nulls_as_nan(name: str, data: list[Any], datatype: str, depth: int = 0) -> list[Any]:
    """Float ``data`` with JSON ``null`` read as NaN (a missing value), for models that accept NaN.

    JSON has no NaN (bare ``NaN`` is invalid, ``"NaN"`` a string): ``null`` is how a client says
    missing. Other datatypes, and models without ``allow_nan``, keep rejecting it.
    """
    if datatype not in FLOATS or type(data) is not list:
        return data
    if depth >= MAX_DEPTH:
        raise BadRequestError(
            f"input {name!r}: data is nested deeper than {MAX_DEPTH} levels", details={"input": name}
        )
    return [
        np.nan if v is None else nulls_as_nan(name, v, datatype, depth + 1) if type(v) is list else v
        for v in data
    ]


def _flat_strings(name: str, data: Sequence[Any], error: type[SluiceError]) -> list[str]:
    """Row-major strings of nested ``data``; iterative, so no nesting can exhaust the stack."""
    flat: list[str] = []
    stack: list[Iterator[Any]] = [iter(data)]
    while stack:
        value = next(stack[-1], _END)
        if value is _END:
            stack.pop()
        elif type(value) is str:
            flat.append(value)
        elif type(value) is list or type(value) is tuple:
            # Ragged nesting is left to the caller's element count; only row-major order matters here.
            if len(stack) >= MAX_DEPTH:
                raise BadRequestError(
                    f"input {name!r}: data is nested deeper than {MAX_DEPTH} levels", details={"input": name}
                )
            stack.append(iter(value))
        else:
            raise error(
                f"input {name!r}: BYTES data must be strings, got {_short(value)}", details={"input": name}
            )
    return flat


_END = object()


def _has_bool(data: Any) -> bool:
    types = set(map(type, data))
    if bool in types:
        return True
    return (list in types or tuple in types) and any(
        _has_bool(v) for v in data if type(v) is list or type(v) is tuple
    )


def _fits(arr: Array, dtype: np.dtype[Any]) -> bool:
    if np.can_cast(arr.dtype, dtype, "safe"):
        return True
    info = np.iinfo(dtype)
    return int(arr.min()) >= info.min and int(arr.max()) <= info.max


def cast(name: str, arr: Array, target: str, allow_nan: bool) -> Array:
    """``arr`` as the signature's dtype; values the model would see wrongly are a 422."""
    if target == "BYTES":
        return arr
    dtype = NUMPY_DTYPES[target]
    src = arr.dtype
    if src.kind == "f":
        narrowing = src.itemsize > dtype.itemsize
        checked = arr.size and (narrowing or not allow_nan)
        if checked and not float(_max(_abs(arr.ravel()))) <= _LIMITS[target]:
            _check_floats(name, arr, target, allow_nan)
        # No errstate needed: every finite value now fits, and NaN/Inf cast without a warning.
        return arr if src == dtype else arr.astype(dtype)
    if src.kind in "iu" and arr.size:
        if target in INTEGERS and not _fits(arr, dtype):
            raise InvalidInputError(
                f"input {name!r}: a value is out of range for the model's {target}", details={"input": name}
            )
        if target == "FP16" and max(-int(arr.min()), int(arr.max())) > np.finfo(np.float16).max:
            raise InvalidInputError(
                f"input {name!r}: a value is out of range for the model's FP16", details={"input": name}
            )
    return arr if src == dtype else arr.astype(dtype)


def _check_floats(name: str, arr: Array, target: str, allow_nan: bool) -> None:
    flat = arr.ravel()
    per_row = flat.size // arr.shape[0] if arr.ndim and arr.shape[0] else 1
    bad = ~np.isfinite(flat)
    if not allow_nan and bad.any():
        i = int(np.argmax(bad))
        what = "NaN" if np.isnan(flat[i]) else "Inf"
        raise InvalidInputError(
            f"input {name!r} contains {what} at row {i // per_row}; "
            f"this model does not accept missing or infinite values",
            details={"input": name, "row": i // per_row},
        )
    limit = float(np.finfo(NUMPY_DTYPES[target]).max)
    over = (np.abs(np.where(bad, 0, flat)) > limit).nonzero()[0]
    if over.size:
        i = int(over[0])
        raise InvalidInputError(
            f"input {name!r}: value {flat[i]} at row {i // per_row} is out of range for the model's {target}",
            details={"input": name, "row": i // per_row},
        )


def json_data(flat: Array, datatype: str) -> Any:
    """A flat array in a form orjson writes directly (it cannot write FP16, object or non-native arrays)."""
    if datatype == "BYTES":
        return [_as_text(v) for v in flat.tolist()]
    if datatype == "FP16":
        return flat.astype(np.float32)
    if not flat.dtype.isnative:
        return flat.astype(flat.dtype.newbyteorder("="))
    return flat


def json_rows(arr: Array) -> Any:
    datatype = v2_datatype(arr.dtype)
    if datatype == "BYTES":
        return _text_tree(arr.tolist())
    return json_data(arr.ravel(), datatype).reshape(arr.shape)


def _text_tree(value: Any) -> Any:
    if type(value) is list:
        return [_text_tree(v) for v in value]
    return _as_text(value)


def _as_text(value: Any) -> str:
    if isinstance(value, bytes):
        # JSON cannot carry arbitrary bytes; a lossy label beats a failed response.
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else str(value)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
