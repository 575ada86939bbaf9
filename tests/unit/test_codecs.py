"""The v1/v2 codecs against hand-written bodies and tritonclient's own request builder and parser."""

from __future__ import annotations

import gzip
import struct
import zlib
from typing import Any

import numpy as np
import orjson
import pytest
from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput

from sluice.converters.artifact.datatypes import NUMPY_DTYPES
from sluice.converters.artifact.errors import (
    BadRequestError,
    BodyTooLargeError,
    InternalError,
    InvalidInputError,
    SluiceError,
    UnsupportedMediaError,
)
from sluice.converters.artifact.manifest import TensorSpec
from sluice.server.codecs.v1 import decode_v1, encode_v1
from sluice.server.codecs.v2 import (
    InferRequest,
    RequestedOutput,
    decode_v2,
    decompress,
    encode_v2,
)

FIXED = [
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
]
ALL = [*FIXED, "BYTES"]
SIG = [TensorSpec("x", "FP32", (-1, 3))]


def sample(datatype: str, shape: tuple[int, ...] = (2, 3)) -> np.ndarray[Any, Any]:
    n = int(np.prod(shape))
    if datatype == "BYTES":
        return np.array(["a", "", "héllo", "x y", "7", "zz"][:n] * (n // 6 + 1), dtype=object)[:n].reshape(
            shape
        )
    if datatype == "BOOL":
        return (np.arange(n) % 2 == 0).reshape(shape)
    return np.arange(n).astype(NUMPY_DTYPES[datatype]).reshape(shape)


def v2(inputs: list[dict[str, Any]], **extra: Any) -> bytes:
    return orjson.dumps({"inputs": inputs, **extra})


def triton_body(
    arrays: dict[str, tuple[np.ndarray[Any, Any], str, bool]], **kwargs: Any
) -> tuple[bytes, int | None]:
    inputs = []
    for name, (arr, datatype, binary) in arrays.items():
        inp = InferInput(name, list(arr.shape), datatype)
        inp.set_data_from_numpy(arr, binary_data=binary)
        inputs.append(inp)
    body, json_size = InferenceServerClient.generate_request_body(inputs, **kwargs)
    return body, json_size


def assert_same(got: np.ndarray[Any, Any], want: np.ndarray[Any, Any]) -> None:
    assert got.shape == want.shape
    if want.dtype == object:
        assert got.dtype == object
        assert [_text(v) for v in got.ravel()] == [_text(v) for v in want.ravel()]
    else:
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -- v2 decode: round trips ----------------------------------------------------------------------


@pytest.mark.parametrize("datatype", ALL)
def test_json_round_trip_every_datatype(datatype: str) -> None:
    want = sample(datatype)
    sig = [TensorSpec("x", datatype, (-1, 3))]
    data = want.tolist()  # nested row-major
    req = decode_v2(
        v2([{"name": "x", "shape": [2, 3], "datatype": datatype, "data": data}]),
        header_length=None,
        signature=sig,
    )
    assert req.rows == 2
    assert_same(req.inputs["x"], want)
    if datatype == "BYTES":
        assert all(type(v) is str for v in req.inputs["x"].ravel())


@pytest.mark.parametrize("datatype", ALL)
@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_request_every_datatype(datatype: str, binary: bool) -> None:
    want = sample(datatype)
    if datatype == "BYTES":
        want = np.array([v.encode() for v in want.ravel()], dtype=object).reshape(want.shape)
    body, json_size = triton_body({"x": (want, datatype, binary)}, timeout=2500, priority=1)
    sig = [TensorSpec("x", datatype, (-1, 3))]
    req = decode_v2(body, header_length=json_size, signature=sig)
    assert_same(req.inputs["x"], want)
    assert (req.timeout_us, req.priority, req.binary_output, req.outputs) == (2500, 1, True, None)


def test_mixed_json_and_binary_inputs_keep_signature_order() -> None:
    a, b, c = sample("FP32"), sample("BYTES"), sample("INT64")
    body, json_size = triton_body(
        {"c": (c, "INT64", True), "a": (a, "FP32", False), "b": (b.astype(object), "BYTES", True)},
        outputs=[InferRequestedOutput("y", binary_data=False), InferRequestedOutput("p", binary_data=True)],
        request_id="r1",
    )
    sig = [
        TensorSpec("a", "FP32", (-1, 3)),
        TensorSpec("b", "BYTES", (-1, 3)),
        TensorSpec("c", "INT64", (-1, 3)),
    ]
    req = decode_v2(body, header_length=json_size, signature=sig, output_names=["y", "p"])
    assert list(req.inputs) == ["a", "b", "c"]
    assert_same(req.inputs["a"], a)
    assert_same(req.inputs["b"], b)
    assert_same(req.inputs["c"], c)
    assert req.id == "r1"
    assert req.outputs == [RequestedOutput("y", False), RequestedOutput("p", True)]


def test_safe_casts_to_signature_dtype() -> None:
    sig = [TensorSpec("x", "FP32", (-1, 2))]
    req = decode_v2(
        v2([{"name": "x", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]}]),
        header_length=None,
        signature=sig,
    )
    assert req.inputs["x"].dtype == np.float32
    body, n = triton_body({"x": (np.array([[1.5, 2.5]]), "FP64", True)})
    assert decode_v2(body, header_length=n, signature=sig).inputs["x"].tolist() == [[1.5, 2.5]]
    sig32 = [TensorSpec("x", "INT32", (-1, 2))]
    body, n = triton_body({"x": (np.array([[7, -8]], dtype=np.int64), "INT64", True)})
    got = decode_v2(body, header_length=n, signature=sig32).inputs["x"]
    assert got.dtype == np.int32 and got.tolist() == [[7, -8]]


def test_flat_data_and_variable_dims() -> None:
    sig = [TensorSpec("x", "FP32", (-1, -1))]
    req = decode_v2(
        v2([{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4.5]}]),
        header_length=None,
        signature=sig,
    )
    assert req.inputs["x"].tolist() == [[1, 2], [3, 4.5]]


def test_nan_allowed_when_model_accepts_missing_values() -> None:
    body, n = triton_body({"x": (np.array([[1, np.nan, 3]], dtype=np.float32), "FP32", True)})
    got = decode_v2(body, header_length=n, signature=SIG, allow_nan=True).inputs["x"]
    assert np.isnan(got[0, 1])


def test_nan_survives_narrowing_when_allowed_but_overflow_does_not() -> None:
    body, n = triton_body({"x": (np.array([[np.nan, np.inf, 2.5]]), "FP64", True)})
    got = decode_v2(body, header_length=n, signature=SIG, allow_nan=True).inputs["x"]
    assert got.dtype == np.float32 and np.isnan(got[0, 0]) and np.isinf(got[0, 1]) and got[0, 2] == 2.5
    body, n = triton_body({"x": (np.array([[np.nan, 1e39, 2.5]]), "FP64", True)})
    with pytest.raises(
        InvalidInputError, match="value 1e\\+39 at row 0 is out of range for the model's FP32"
    ):
        decode_v2(body, header_length=n, signature=SIG, allow_nan=True)


def test_raw_body_single_input() -> None:
    want = np.arange(12, dtype=np.float32).reshape(4, 3)
    req = decode_v2(want.tobytes(), header_length=0, signature=SIG)
    assert req.rows == 4 and req.id is None
    assert_same(req.inputs["x"], want)


@pytest.mark.parametrize(
    ("body", "sig", "fragment"),
    [
        (b"\0" * 10, SIG, "whole number"),
        (b"", SIG, "whole number"),
        (b"\0" * 12, [*SIG, TensorSpec("z", "FP32", (-1, 3))], "single-input"),
        (b"\0" * 12, [TensorSpec("x", "FP32", (-1, -1))], "fixed non-batch dims"),
        (b"\0" * 12, [TensorSpec("x", "BYTES", (-1, 3))], "fixed-size datatype"),
    ],
)
def test_raw_body_rejected(body: bytes, sig: list[TensorSpec], fragment: str) -> None:
    with pytest.raises(BadRequestError, match=fragment):
        decode_v2(body, header_length=0, signature=sig)


# -- v2 decode: every bad-input rule -------------------------------------------------------------


def x(
    shape: Any = (1, 3), data: Any = (1.0, 2.0, 3.0), datatype: Any = "FP32", **extra: Any
) -> dict[str, Any]:
    entry = {"name": "x", "shape": list(shape) if isinstance(shape, tuple) else shape, "datatype": datatype}
    if data is not None:
        entry["data"] = list(data) if isinstance(data, tuple) else data
    return {**entry, **extra}


BAD_JSON: list[tuple[bytes, type[SluiceError], str]] = [
    (b"{not json", BadRequestError, "not valid JSON"),
    (b"[1, 2]", BadRequestError, "JSON object"),
    (b"{}", BadRequestError, "'inputs' must be a non-empty list"),
    (v2([]), BadRequestError, "'inputs' must be a non-empty list"),
    (v2(["x"]), BadRequestError, "must be an object"),
    (v2([{"shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]), BadRequestError, "no 'name'"),
    (v2([{"name": "x", "datatype": "FP32", "data": [1, 2, 3]}]), BadRequestError, "input 'x' has no 'shape'"),
    (v2([{"name": "x", "shape": [1, 3], "data": [1, 2, 3]}]), BadRequestError, "input 'x' has no 'datatype'"),
    (v2([x(datatype="FLOAT")]), BadRequestError, "unknown datatype 'FLOAT'"),
    (v2([x(shape=[1, -3])]), BadRequestError, "non-negative integers"),
    (v2([x(shape=[1, 3.0])]), BadRequestError, "non-negative integers"),
    (v2([x(shape=[1, True, 3])]), BadRequestError, "non-negative integers"),
    (v2([x(shape="1,3")]), BadRequestError, "shape must be a list"),
    (v2([x(data=None)]), BadRequestError, "input 'x' needs 'data'"),
    (v2([x(data=[1.0, 2.0])]), BadRequestError, r"input 'x': shape \[1, 3\] needs 3 elements, data has 2"),
    (v2([x(shape=[2, 3], data=[[1, 2, 3], [4, 5]])]), BadRequestError, "input 'x': data is ragged"),
    (v2([x(data=[1.0, "2", 3.0])]), BadRequestError, "input 'x': FP32 data must be numbers"),
    (v2([x(data=[1.0, None, 3.0])]), BadRequestError, "input 'x': FP32 data must be numbers"),
    (v2([x(data=[1.0, True, 3.0])]), BadRequestError, "input 'x': FP32 data must be numbers"),
    (v2([x(data=[True, False, True])]), BadRequestError, "input 'x': FP32 data must be numbers"),
    (v2([x(data=[1, {"a": 1}, 3])]), BadRequestError, "input 'x': FP32 data must be numbers"),
    (v2([x(datatype="INT64", data=[1, 2.5, 3])]), BadRequestError, "INT64 data must be integers"),
    (v2([x(datatype="INT8", data=[1, 300, 3])]), BadRequestError, "out of range for INT8"),
    (v2([x(datatype="BOOL", data=[1, 0, 1])]), BadRequestError, "BOOL data must be true/false"),
    (v2([x()], parameters=[1]), BadRequestError, "'parameters' must be an object"),
    (v2([x()], parameters={"timeout": -1}), BadRequestError, "'timeout' must be a non-negative integer"),
    (v2([x()], parameters={"timeout": 1.5}), BadRequestError, "'timeout' must be a non-negative integer"),
    (v2([x()], parameters={"priority": -2}), BadRequestError, "'priority' must be a non-negative integer"),
    (v2([x()], parameters={"binary_data_output": "yes"}), BadRequestError, "binary_data_output"),
    (v2([x()], id=5), BadRequestError, "'id' must be a string"),
    (v2([x()], outputs={"name": "y"}), BadRequestError, "'outputs' must be a list"),
    (v2([x()], outputs=[{"name": "y"}, {"name": "y"}]), BadRequestError, "'y' is requested more than once"),
    (v2([x()], outputs=[{"name": "y", "parameters": {"binary_data": 1}}]), BadRequestError, "binary_data"),
    (v2([x(shape=[4096, 4096, 4096])]), BodyTooLargeError, "exceeds the limit"),
    (v2([x(shape=[0, 10**18], data=[])]), BodyTooLargeError, "exceeds the limit"),
    (v2([x(name="y")]), InvalidInputError, "unknown input 'y'; model expects inputs: 'x'"),
    (v2([x(), x()]), InvalidInputError, "input 'x' appears more than once"),
    (v2([x(datatype="FP64"), {**x(name="z")}]), InvalidInputError, "unknown input 'z'"),
    (
        v2([x(datatype="BYTES", data=["a", "b", "c"])]),
        InvalidInputError,
        "datatype BYTES cannot be used, model expects FP32",
    ),
    (
        v2([x(shape=[3], data=[1, 2, 3])]),
        InvalidInputError,
        r"shape \[3\] does not fit the model's \[-1, 3\]",
    ),
    (
        v2([x(shape=[1, 4], data=[1, 2, 3, 4])]),
        InvalidInputError,
        r"shape \[1, 4\] does not fit the model's \[-1, 3\]",
    ),
    (
        v2([x(data=[1e300, 0.0, 0.0], datatype="FP64")]),
        InvalidInputError,
        "out of range for the model's FP32",
    ),
]


@pytest.mark.parametrize(("body", "error", "fragment"), BAD_JSON)
def test_bad_json_requests(body: bytes, error: type[SluiceError], fragment: str) -> None:
    with pytest.raises(error, match=fragment) as info:
        decode_v2(body, header_length=None, signature=SIG, max_elements=1_000_000, output_names=["y"])
    assert type(info.value) is error


@pytest.mark.parametrize("data", [["a", 2, "c"], ["a", None, "c"], [["a"], ["b", {}]]])
def test_bytes_json_must_be_strings(data: list[Any]) -> None:
    sig = [TensorSpec("x", "BYTES", (-1, 3))]
    with pytest.raises(BadRequestError, match="input 'x': BYTES data must be strings"):
        decode_v2(v2([x(datatype="BYTES", data=data)]), header_length=None, signature=sig)


def test_missing_input_lists_expected() -> None:
    sig = [*SIG, TensorSpec("z", "INT64", (-1,))]
    with pytest.raises(InvalidInputError, match="missing input 'z'; model expects inputs: 'x', 'z'"):
        decode_v2(v2([x()]), header_length=None, signature=sig)


def test_batch_sizes_must_agree() -> None:
    sig = [*SIG, TensorSpec("z", "INT64", (-1,))]
    body = v2([x(), {"name": "z", "shape": [2], "datatype": "INT64", "data": [1, 2]}])
    with pytest.raises(InvalidInputError, match="batch size: 'z' has 2 rows, others 1"):
        decode_v2(body, header_length=None, signature=sig)


def test_unknown_requested_output() -> None:
    with pytest.raises(InvalidInputError, match="unknown output 'q'; model has outputs: 'y', 'p'"):
        decode_v2(
            v2([x()], outputs=[{"name": "q"}]), header_length=None, signature=SIG, output_names=["y", "p"]
        )


def test_integer_narrowing_overflow_is_422() -> None:
    sig = [TensorSpec("x", "INT32", (-1, 3))]
    body = v2([x(datatype="INT64", data=[1, 2**40, 3])])
    with pytest.raises(InvalidInputError, match="input 'x': a value is out of range for the model's INT32"):
        decode_v2(body, header_length=None, signature=sig)
    sig = [TensorSpec("x", "UINT8", (-1, 3))]
    with pytest.raises(InvalidInputError, match="out of range for the model's UINT8"):
        decode_v2(v2([x(datatype="INT64", data=[1, -1, 3])]), header_length=None, signature=sig)


def test_float_to_integer_is_422() -> None:
    sig = [TensorSpec("x", "INT64", (-1, 3))]
    with pytest.raises(InvalidInputError, match="datatype FP64 cannot be used, model expects INT64"):
        decode_v2(v2([x(datatype="FP64")]), header_length=None, signature=sig)


@pytest.mark.parametrize(("value", "what"), [(np.nan, "NaN"), (np.inf, "Inf"), (-np.inf, "Inf")])
@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64"])
def test_nan_in_binary_is_422_with_row(value: float, what: str, datatype: str) -> None:
    arr = np.zeros((5, 3), dtype=NUMPY_DTYPES[datatype])
    arr[3, 1] = value
    body, n = triton_body({"x": (arr, datatype, True)})
    sig = [TensorSpec("x", datatype, (-1, 3))]
    with pytest.raises(
        InvalidInputError, match=f"input 'x' contains {what} at row 3; this model does not accept"
    ):
        decode_v2(body, header_length=n, signature=sig)


def test_large_finite_values_pass_the_fast_check() -> None:
    arr = np.array([[3e38, -3e38, 1e30]], dtype=np.float32)
    body, n = triton_body({"x": (arr, "FP32", True)})
    assert_same(decode_v2(body, header_length=n, signature=SIG).inputs["x"], arr)


def binary_request(
    size: int, trailer: bytes, datatype: str = "FP32", shape: tuple[int, ...] = (1, 3)
) -> tuple[bytes, int]:
    header = v2(
        [{"name": "x", "shape": list(shape), "datatype": datatype, "parameters": {"binary_data_size": size}}]
    )
    return header + trailer, len(header)


@pytest.mark.parametrize(
    ("size", "trailer", "fragment"),
    [
        (12, b"\0" * 11, "binary data ends before its 12 bytes"),
        (12, b"\0" * 13, "inputs declare 12 bytes of binary data, the body carries 13"),
        (8, b"\0" * 8, "binary_data_size is 8 bytes, shape \\[1, 3\\] of FP32 needs 12"),
        (-1, b"", "binary_data_size must be a non-negative integer"),
    ],
)
def test_binary_sizes_are_checked(size: int, trailer: bytes, fragment: str) -> None:
    body, n = binary_request(size, trailer)
    with pytest.raises(BadRequestError, match=fragment):
        decode_v2(body, header_length=n, signature=SIG)


def bytes_elements(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(i)) + i for i in items)


@pytest.mark.parametrize(
    ("trailer", "fragment"),
    [
        (bytes_elements(b"a", b"b"), "BYTES data ends after 2 of 3 elements"),
        (
            bytes_elements(b"a", b"b") + struct.pack("<I", 99) + b"c",
            "BYTES element 2 claims 99 bytes, only 1 remain",
        ),
        (bytes_elements(b"a", b"b", b"c") + b"zz", "2 bytes left over after 3 BYTES elements"),
        (bytes_elements(b"a", b"\xff\xfe", b"c"), "BYTES element 1 is not valid UTF-8"),
    ],
)
def test_bad_binary_bytes(trailer: bytes, fragment: str) -> None:
    sig = [TensorSpec("x", "BYTES", (-1, 3))]
    body, n = binary_request(len(trailer), trailer, "BYTES")
    with pytest.raises(BadRequestError, match=f"input 'x': {fragment}"):
        decode_v2(body, header_length=n, signature=sig)


@pytest.mark.parametrize("header_length", [-1, 10_000])
def test_header_length_outside_body(header_length: int) -> None:
    with pytest.raises(BadRequestError, match="Inference-Header-Content-Length"):
        decode_v2(v2([x()]), header_length=header_length, signature=SIG)


def test_binary_bool_is_normalised() -> None:
    body, n = binary_request(3, b"\x00\x02\x01", "BOOL")
    got = decode_v2(body, header_length=n, signature=[TensorSpec("x", "BOOL", (-1, 3))]).inputs["x"]
    assert got.tolist() == [[False, True, True]]


def test_parameters_and_outputs() -> None:
    body = v2(
        [x()],
        id="abc",
        parameters={"binary_data_output": True, "timeout": 0, "priority": 2, "custom": "v"},
        outputs=[{"name": "y"}, {"name": "p", "parameters": {"binary_data": False}}],
    )
    req = decode_v2(body, header_length=None, signature=SIG)
    assert req.parameters == {"binary_data_output": True, "timeout": 0, "priority": 2, "custom": "v"}
    assert (req.id, req.binary_output, req.timeout_us, req.priority) == ("abc", True, 0, 2)
    assert req.outputs == [RequestedOutput("y", True), RequestedOutput("p", False)]
    plain = decode_v2(v2([x()]), header_length=None, signature=SIG)
    assert (plain.parameters, plain.outputs, plain.binary_output, plain.timeout_us, plain.priority) == (
        {},
        None,
        False,
        None,
        0,
    )


# -- v2 encode -----------------------------------------------------------------------------------

OUT_SPECS = [TensorSpec("label", "BYTES", (-1,)), *(TensorSpec(d, d, (-1, 3)) for d in FIXED)]


def all_outputs() -> dict[str, np.ndarray[Any, Any]]:
    outputs = {d: sample(d) for d in FIXED}
    outputs["label"] = np.array(["cat", "dög"], dtype=object)
    return outputs


@pytest.mark.parametrize("binary", [True, False])
def test_encode_parsed_by_tritonclient(binary: bool) -> None:
    outputs = all_outputs()
    request = InferRequest(inputs={}, rows=2, id="r9", binary_output=binary)
    body, headers = encode_v2(
        model_name="m", model_version="3", request=request, outputs=outputs, output_specs=OUT_SPECS
    )
    length = headers.get("inference-header-content-length")
    assert headers["content-type"] == ("application/octet-stream" if binary else "application/json")
    assert (length is not None) == binary
    result = InferenceServerClient.parse_response_body(
        body, header_length=None if length is None else int(length)
    )
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == ("m", "3", "r9")
    assert [o["name"] for o in response["outputs"]] == [s.name for s in OUT_SPECS]
    for name, want in outputs.items():
        got = result.as_numpy(name)
        if want.dtype == object:
            assert [_text(v) for v in got.ravel()] == list(want.ravel())
        else:
            assert got.shape == want.shape
            np.testing.assert_array_equal(got, want)


def test_encode_selected_outputs_in_request_order() -> None:
    outputs = {"y": np.array([1, 2]), "p": np.array([[0.25, 0.75], [0.5, 0.5]], dtype=np.float32)}
    specs = [TensorSpec("y", "INT64", (-1,)), TensorSpec("p", "FP32", (-1, 2))]
    request = InferRequest(
        inputs={}, rows=2, outputs=[RequestedOutput("p", True), RequestedOutput("y", False)]
    )
    body, headers = encode_v2(
        model_name="m", model_version="1", request=request, outputs=outputs, output_specs=specs
    )
    n = int(headers["inference-header-content-length"])
    doc = orjson.loads(body[:n])
    assert "id" not in doc
    assert doc["outputs"] == [
        {"name": "p", "datatype": "FP32", "shape": [2, 2], "parameters": {"binary_data_size": 16}},
        {"name": "y", "datatype": "INT64", "shape": [2], "data": [1, 2]},
    ]
    assert body[n:] == outputs["p"].tobytes()


def test_encode_json_floats_are_short() -> None:
    outputs = {"p": np.array([[0.1, 0.9]], dtype=np.float32)}
    body, headers = encode_v2(
        model_name="m",
        model_version="1",
        request=InferRequest(inputs={}, rows=1),
        outputs=outputs,
        output_specs=[TensorSpec("p", "FP32", (-1, 2))],
    )
    assert headers == {"content-type": "application/json"}
    assert b'"data":[0.1,0.9]' in body


def test_encode_missing_or_unknown_output() -> None:
    specs = [TensorSpec("y", "INT64", (-1,))]
    with pytest.raises(InternalError, match="no output 'y'"):
        encode_v2(
            model_name="m",
            model_version="1",
            request=InferRequest(inputs={}, rows=1),
            outputs={},
            output_specs=specs,
        )
    request = InferRequest(inputs={}, rows=1, outputs=[RequestedOutput("q", False)])
    with pytest.raises(InvalidInputError, match="unknown output 'q'"):
        encode_v2(
            model_name="m",
            model_version="1",
            request=request,
            outputs={"y": np.array([1])},
            output_specs=specs,
        )


# -- content encodings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda b: zlib.compress(b)[2:-4]),  # raw deflate, no zlib wrapper
        ("GZIP", gzip.compress),
    ],
)
def test_decompress_round_trip(encoding: str, compress: Any) -> None:
    body, n = triton_body({"x": (sample("FP32"), "FP32", True)})
    plain = decompress(compress(body), encoding, max_bytes=len(body))
    assert plain == body
    assert_same(decode_v2(plain, header_length=n, signature=SIG).inputs["x"], sample("FP32"))


@pytest.mark.parametrize("encoding", [None, "", "identity"])
def test_identity_is_untouched(encoding: str | None) -> None:
    assert decompress(b"abc", encoding, max_bytes=1) == b"abc"


def test_decompression_bomb_stops_at_limit() -> None:
    bomb = gzip.compress(b"\0" * 50_000_000)
    with pytest.raises(BodyTooLargeError, match="exceeds 1000000 bytes"):
        decompress(bomb, "gzip", max_bytes=1_000_000)


@pytest.mark.parametrize(
    ("body", "encoding", "error", "fragment"),
    [
        (b"not gzip at all", "gzip", BadRequestError, "not valid gzip"),
        (gzip.compress(b"hello")[:-6], "gzip", BadRequestError, "truncated"),
        (gzip.compress(b"hello") + b"junk", "gzip", BadRequestError, "trailing bytes"),
        (b"abc", "br", UnsupportedMediaError, "unsupported content-encoding 'br'"),
    ],
)
def test_decompress_errors(body: bytes, encoding: str, error: type[SluiceError], fragment: str) -> None:
    with pytest.raises(error, match=fragment):
        decompress(body, encoding, max_bytes=1000)


# -- v1 ------------------------------------------------------------------------------------------

FEATURES = [TensorSpec("input", "FP32", (-1, 3), features=("age", "income", "score"))]
COLUMNS = [TensorSpec("age", "FP32", (-1, 1)), TensorSpec("city", "BYTES", (-1,))]


def test_v1_rows() -> None:
    req = decode_v1(b'{"instances": [[1, 2, 3], [4, 5, 6.5]]}', signature=FEATURES)
    assert req.rows == 2
    assert_same(req.inputs["input"], np.array([[1, 2, 3], [4, 5, 6.5]], dtype=np.float32))


def test_v1_objects_laid_out_in_feature_order() -> None:
    body = b'{"instances": [{"score": 3, "age": 1, "income": 2}, {"income": 5, "age": 4, "score": 6}]}'
    assert decode_v1(body, signature=FEATURES).inputs["input"].tolist() == [[1, 2, 3], [4, 5, 6]]


def test_v1_objects_one_input_per_column() -> None:
    req = decode_v1(
        b'{"instances": [{"age": 30, "city": "Oslo"}, {"age": 41.5, "city": "Lima"}]}', signature=COLUMNS
    )
    assert_same(req.inputs["age"], np.array([[30], [41.5]], dtype=np.float32))
    assert_same(req.inputs["city"], np.array(["Oslo", "Lima"], dtype=object))


def test_v1_columnar_inputs() -> None:
    req = decode_v1(b'{"inputs": {"age": [1, 2], "city": ["a", "b"]}}', signature=COLUMNS)
    assert req.rows == 2 and req.inputs["age"].tolist() == [[1], [2]]


@pytest.mark.parametrize(
    ("body", "sig", "error", "fragment"),
    [
        (b'{"instances": []}', FEATURES, BadRequestError, "non-empty list"),
        (b'{"rows": [[1]]}', FEATURES, BadRequestError, "needs 'instances'"),
        (
            b'{"instances": [{"age": 1, "income": 2}]}',
            FEATURES,
            InvalidInputError,
            "instance 0 has no feature 'score'",
        ),
        (
            b'{"instances": [{"age": 1, "income": 2, "score": 3, "zip": 4}]}',
            FEATURES,
            InvalidInputError,
            "unknown feature 'zip'",
        ),
        (b'{"instances": [{"age": 1}]}', COLUMNS, InvalidInputError, "has no input 'city'"),
        (b'{"instances": [[1, 2, 3], {"age": 1}]}', FEATURES, BadRequestError, "mixes objects and rows"),
        (
            b'{"instances": [[1, 2], [3, 4]]}',
            FEATURES,
            InvalidInputError,
            r"2 values per row, model expects shape \[-1, 3\]",
        ),
        (b'{"instances": [[1, 2, 3], [4, 5]]}', FEATURES, BadRequestError, "ragged"),
        (b'{"instances": [[1, "a", 3]]}', FEATURES, InvalidInputError, "FP32 data must be numbers"),
        (b'{"instances": [[1, true, 3]]}', FEATURES, InvalidInputError, "FP32 data must be numbers"),
        (b'{"instances": [[1, 2, 3]]}', COLUMNS, InvalidInputError, "send instances as objects"),
        (
            b'{"instances": [[1, 2, 3], [4, 5, 6], [7, 8, 9]]}',
            FEATURES,
            BodyTooLargeError,
            "exceed the limit",
        ),
        (b'{"instances": [[1, 2, 1e300]]}', FEATURES, InvalidInputError, "out of range for the model's FP32"),
    ],
)
def test_v1_bad_requests(body: bytes, sig: list[TensorSpec], error: type[SluiceError], fragment: str) -> None:
    with pytest.raises(error, match=fragment) as info:
        decode_v1(body, signature=sig, max_elements=8)
    assert type(info.value) is error


def test_encode_v1_single_and_multiple_outputs() -> None:
    label = np.array([0, 1])
    probs = np.array([[0.25, 0.75], [0.5, 0.5]], dtype=np.float32)
    specs = [TensorSpec("label", "INT64", (-1,)), TensorSpec("probabilities", "FP32", (-1, 2))]
    assert orjson.loads(encode_v1({"label": label}, specs[:1])) == {"predictions": [0, 1]}
    assert orjson.loads(encode_v1({"label": label, "probabilities": probs}, specs)) == {
        "predictions": [
            {"label": 0, "probabilities": [0.25, 0.75]},
            {"label": 1, "probabilities": [0.5, 0.5]},
        ]
    }
    names = np.array([b"cat", "dog"], dtype=object)
    assert orjson.loads(encode_v1({"label": names}, [TensorSpec("label", "BYTES", (-1,))])) == {
        "predictions": ["cat", "dog"]
    }


def test_encode_v1_several_outputs_gives_one_dict_per_row() -> None:
    specs = [
        TensorSpec("label", "INT64", (-1,), role="label"),
        TensorSpec("probabilities", "FP32", (-1, 2), role="probabilities"),
    ]
    outputs = {
        "label": np.array([1, 0], dtype=np.int64),
        "probabilities": np.array([[0.25, 0.75], [0.5, 0.5]], dtype=np.float32),
    }
    assert orjson.loads(encode_v1(outputs, specs)) == {
        "predictions": [
            {"label": 1, "probabilities": [0.25, 0.75]},
            {"label": 0, "probabilities": [0.5, 0.5]},
        ]
    }


def test_bytes_data_nested_past_numpy_dimensions_is_a_400_not_a_recursion_error() -> None:
    signature = [TensorSpec("text", "BYTES", (-1, 1))]
    for depth, ok in ((64, True), (65, False), (1000, False)):
        data = "[" * depth + '"a"' + "]" * depth
        body = f'{{"inputs": [{{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": {data}}}]}}'
        if ok:
            decoded = decode_v2(body.encode(), header_length=None, signature=signature, max_elements=100)
            assert decoded.inputs["text"].tolist() == [["a"]]
        else:
            with pytest.raises(BadRequestError, match="nested deeper than 64"):
                decode_v2(body.encode(), header_length=None, signature=signature, max_elements=100)
