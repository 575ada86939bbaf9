"""Bytes on the wire below JSON: content encodings and the raw tensor layout of the binary extension.

Owns turning a (possibly compressed) request body into plain bytes, and one tensor's raw bytes into a
numpy array and back: little-endian, row-major, no padding; BOOL one byte per element; BYTES as a
4-byte little-endian length before each element. Every length here is untrusted input.
``sluice.server.codecs.v2`` builds the v1/v2 protocol on top of this module.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import numpy as np
import numpy.typing as npt

from sluice.converters.artifact.datatypes import NUMPY_DTYPES
from sluice.converters.artifact.errors import BadRequestError, BodyTooLargeError, UnsupportedMediaError

Array = npt.NDArray[Any]

_LENGTH = struct.Struct("<I")
_BOOL_BYTES = np.dtype(np.uint8)


def decompress(body: bytes, content_encoding: str | None, *, max_bytes: int) -> bytes:
    """The body with its ``Content-Encoding`` undone, never inflating past ``max_bytes``.

    ``deflate`` accepts both zlib-wrapped and raw streams because clients disagree on what the
    HTTP name means.
    """
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":
        zlib_header = len(body) >= 2 and body[0] & 0x0F == 8 and (body[0] << 8 | body[1]) % 31 == 0
        wbits = zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS
    else:
        raise UnsupportedMediaError(
            f"unsupported content-encoding {content_encoding!r}; use gzip, deflate or identity"
        )
    inflater = zlib.decompressobj(wbits)
    try:
        # max_length stops a decompression bomb after max_bytes + 1 bytes instead of at memory exhaustion.
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise BadRequestError(f"body is not valid {encoding} data: {exc}") from exc
    if len(out) > max_bytes:
        raise BodyTooLargeError(
            f"decompressed body exceeds {max_bytes} bytes", details={"max_bytes": max_bytes}
        )
    if not inflater.eof:
        raise BadRequestError(f"{encoding} body is truncated")
    if inflater.unused_data:
        raise BadRequestError(f"{encoding} body has trailing bytes after the compressed stream")
    return out


def read_fixed(view: memoryview, datatype: str, shape: tuple[int, ...]) -> Array:
    """A fixed-size tensor over ``view`` (zero copy except BOOL, which is normalised to 0/1)."""
    if datatype == "BOOL":
        # Any non-zero byte is true; a raw view would keep non-canonical bools that misbehave later.
        flags: Array = np.frombuffer(view, dtype=_BOOL_BYTES).reshape(shape) != 0
        return flags
    return np.frombuffer(view, dtype=NUMPY_DTYPES[datatype]).reshape(shape)


def read_bytes(name: str, view: memoryview, shape: tuple[int, ...], count: int) -> Array:
    """A BYTES tensor (object array of ``str``) from length-prefixed UTF-8 elements filling ``view``."""
    out = np.empty(count, dtype=object)
    end = len(view)
    offset = 0
    for i in range(count):
        if offset + 4 > end:
            raise BadRequestError(
                f"input {name!r}: BYTES data ends after {i} of {count} elements", details={"input": name}
            )
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > end:
            raise BadRequestError(
                f"input {name!r}: BYTES element {i} claims {length} bytes, only {end - offset} remain",
                details={"input": name},
            )
        try:
            out[i] = str(view[offset : offset + length], "utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequestError(
                f"input {name!r}: BYTES element {i} is not valid UTF-8", details={"input": name}
            ) from exc
        offset += length
    if offset != end:
        raise BadRequestError(
            f"input {name!r}: {end - offset} bytes left over after {count} BYTES elements",
            details={"input": name},
        )
    return out.reshape(shape)


def write_tensor(array: Array, datatype: str) -> bytes | memoryview:
    """The raw bytes of one output; fixed-size arrays come back as a view, not a copy."""
    if datatype == "BYTES":
        parts: list[bytes] = []
        for value in array.ravel().tolist():
            raw = _as_bytes(value)
            parts.append(_LENGTH.pack(len(raw)))
            parts.append(raw)
        return b"".join(parts)
    little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return little.reshape(-1).view(np.uint8).data


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return str(value).encode("utf-8")
