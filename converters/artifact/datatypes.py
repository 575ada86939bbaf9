"""Tensor datatypes of the Open Inference Protocol and their numpy, ONNX and Triton-config names.

A leaf module: numpy only. ``BYTES`` tensors are numpy ``object`` arrays holding ``bytes``
(on the wire) or ``str`` (what onnxruntime wants for ``tensor(string)`` inputs).
"""

from __future__ import annotations

import numpy as np

#: v2 datatype -> numpy dtype (little-endian, as the binary extension is).
NUMPY_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}

#: Size in bytes of one element, for every fixed-size datatype (BYTES has none).
ITEM_SIZES: dict[str, int] = {k: v.itemsize for k, v in NUMPY_DTYPES.items() if k != "BYTES"}

#: onnxruntime's type strings -> v2 datatype.
ONNX_TO_V2: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

_NUMPY_TO_V2: dict[np.dtype, str] = {v: k for k, v in NUMPY_DTYPES.items()}

NUMERIC = frozenset(NUMPY_DTYPES) - {"BYTES", "BOOL"}
FLOATS = frozenset({"FP16", "FP32", "FP64"})
INTEGERS = NUMERIC - FLOATS


def v2_datatype(dtype: np.dtype) -> str:
    """The v2 datatype of a numpy dtype (``str``/``bytes``/``object`` arrays are BYTES)."""
    dtype = np.dtype(dtype)
    if dtype.kind in ("U", "S", "O"):
        return "BYTES"
    try:
        return _NUMPY_TO_V2[dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype]
    except KeyError:
        raise ValueError(f"no v2 datatype for numpy dtype {dtype}") from None


def triton_type(datatype: str) -> str:
    """Triton's model-config name of a v2 datatype (``FP32`` -> ``TYPE_FP32``; BYTES -> TYPE_STRING)."""
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def can_cast(src: str, dst: str) -> bool:
    """Whether a tensor sent as ``src`` may be served to an input declared ``dst``.

    Safe means: no information a client would notice is lost. Integers and booleans go to any float
    (JSON numbers without a decimal point arrive as INT64); floats go to wider floats and, because
    clients routinely send FP64 JSON for FP32 models, FP64 to FP32 as well. Floats never go to integers.
    """
    if src == dst:
        return True
    if src == "BYTES" or dst == "BYTES":
        return False
    if dst in FLOATS:
        return True
    if dst in INTEGERS:
        return src in INTEGERS or src == "BOOL"
    return False
