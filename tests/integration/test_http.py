"""Plain HTTP against a real gateway: the v2 JSON surface, v1 ``:predict``, bad input, admin, metrics."""

from __future__ import annotations

import gzip
import struct
from typing import Any

import numpy as np
import orjson
import pytest

pytestmark = pytest.mark.integration


def v2_body(x: np.ndarray, **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}],
        **extra,
    }


def test_v2_json_infer(gateway: Any, fitted: dict[str, Any]) -> None:
    model, sample = fitted["clf"]
    x = sample[:3]
    r = gateway.client.post("/v2/models/clf/infer", json=v2_body(x, id="abc"))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-model-version"] == "1"
    body = r.json()
    assert body["model_name"] == "clf" and body["model_version"] == "1" and body["id"] == "abc"
    out = {o["name"]: o for o in body["outputs"]}
    assert out["label"]["shape"] == [3] and out["label"]["datatype"] == "INT64"
    assert out["label"]["data"] == model.predict(x).tolist()
    probabilities = np.array(out["probabilities"]["data"]).reshape(out["probabilities"]["shape"])
    np.testing.assert_allclose(probabilities, model.predict_proba(x), atol=1e-5)


def test_large_responses_are_compressed_when_the_client_asks(gateway: Any, fitted: dict[str, Any]) -> None:
    _, sample = fitted["clf"]
    big = v2_body(np.repeat(sample, 10, axis=0)[:500])
    plain = gateway.client.post("/v2/models/clf/infer", json=big, headers={"accept-encoding": "identity"})
    assert plain.status_code == 200 and "content-encoding" not in plain.headers
    for encoding in ("gzip", "deflate"):
        r = gateway.client.post("/v2/models/clf/infer", json=big, headers={"accept-encoding": encoding})
        assert r.headers["content-encoding"] == encoding and r.headers["vary"] == "accept-encoding"
        assert r.num_bytes_downloaded < len(plain.content) / 2  # what crossed the wire
        assert r.json() == plain.json()  # httpx inflated it
    refused = gateway.client.post("/v2/models/clf/infer", json=big, headers={"accept-encoding": "gzip;q=0"})
    assert "content-encoding" not in refused.headers
    small = gateway.client.post(
        "/v2/models/clf/infer", json=v2_body(sample[:1]), headers={"accept-encoding": "gzip"}
    )
    assert "content-encoding" not in small.headers  # under compress_responses_from_bytes


def test_nested_data_and_int_cast(gateway: Any, fitted: dict[str, Any]) -> None:
    model, _ = fitted["clf"]
    rows = [[1, 0, -1, 2], [0, 0, 0, 0]]
    body = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "INT64", "data": rows}]}
    r = gateway.client.post("/v2/models/clf/versions/1/infer", json=body)
    assert r.status_code == 200, r.text
    labels = next(o for o in r.json()["outputs"] if o["name"] == "label")["data"]
    assert labels == model.predict(np.array(rows, dtype=np.float32)).tolist()


def test_v1_predict_lists_and_objects(gateway: Any, fitted: dict[str, Any]) -> None:
    model, sample = fitted["reg"]
    x = sample[:2]
    r = gateway.client.post("/v1/models/reg:predict", json={"instances": x.tolist()})
    assert r.status_code == 200, r.text
    predictions = np.array(r.json()["predictions"], dtype=np.float64).ravel()
    np.testing.assert_allclose(predictions, model.predict(x), rtol=1e-4, atol=1e-3)
    names = [f"f{i}" for i in range(4)]
    meta = gateway.client.get("/v2/models/reg").json()
    assert meta["inputs"][0]["shape"] == [-1, 4]
    objects = [dict(zip(names, row, strict=True)) for row in x.tolist()]
    r = gateway.client.post("/v1/models/reg/versions/1:predict", json={"instances": objects})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(
        np.array(r.json()["predictions"], dtype=np.float64).ravel(), model.predict(x), rtol=1e-4, atol=1e-3
    )


def test_binary_response_without_tritonclient(gateway: Any, fitted: dict[str, Any]) -> None:
    model, sample = fitted["clf"]
    x = sample[:2]
    header = orjson.dumps(
        {
            "inputs": [
                {"name": "input", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": 32}}
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }
    )
    r = gateway.client.post(
        "/v2/models/clf/infer",
        content=header + x.tobytes(),
        headers={
            "inference-header-content-length": str(len(header)),
            "content-type": "application/octet-stream",
        },
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    json_len = int(r.headers["inference-header-content-length"])
    meta = orjson.loads(r.content[:json_len])
    (out,) = meta["outputs"]
    assert out["name"] == "probabilities" and out["parameters"]["binary_data_size"] == 16
    probabilities = np.frombuffer(r.content[json_len:], dtype="<f4").reshape(2, 2)
    np.testing.assert_allclose(probabilities, model.predict_proba(x), atol=1e-5)


def _error(r: Any, status: int, *fragments: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) >= {"error", "code"}
    for fragment in fragments:
        assert fragment in body["error"], body


BAD_JSON_CASES = [
    pytest.param(b"{not json", {}, 400, ["JSON"], id="malformed-json"),
    pytest.param(b"[1, 2]", {}, 400, ["object"], id="not-an-object"),
    pytest.param(b'{"inputs": []}', {}, 400, ["inputs"], id="no-inputs"),
    pytest.param(
        orjson.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}),
        {},
        422,
        ["'x'", "input"],
        id="wrong-name",
    ),
    pytest.param(
        orjson.dumps(
            {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "BYTES", "data": ["a"] * 4}]}
        ),
        {},
        422,
        ["BYTES"],
        id="wrong-datatype",
    ),
    pytest.param(
        orjson.dumps({"inputs": [{"name": "input", "shape": [1, 5], "datatype": "FP32", "data": [1] * 5}]}),
        {},
        422,
        ["[-1, 4]"],
        id="wrong-shape",
    ),
    pytest.param(
        orjson.dumps({"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": [1] * 7}]}),
        {},
        400,
        ["8", "7"],
        id="count-disagrees",
    ),
    pytest.param(
        orjson.dumps(
            {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ["a", 1, 2, 3]}]}
        ),
        {},
        400,
        ["input"],
        id="non-numeric",
    ),
    pytest.param(
        orjson.dumps(
            {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
        ),
        {"inference-header-content-length": "9999"},
        400,
        ["Inference-Header-Content-Length"],
        id="header-length-over-body",
    ),
    pytest.param(
        orjson.dumps(
            {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
        ),
        {"inference-header-content-length": "-5"},
        400,
        ["Inference-Header-Content-Length"],
        id="header-length-negative",
    ),
    pytest.param(
        orjson.dumps(
            {"inputs": [{"name": "input", "shape": [10**9, 10**9], "datatype": "FP32", "data": [1]}]}
        ),
        {},
        413,
        ["elements"],
        id="huge-declared-shape",
    ),
    pytest.param(b"{}", {"content-type": "text/csv"}, 415, ["text/csv"], id="wrong-content-type"),
    pytest.param(b"garbage", {"content-encoding": "gzip"}, 400, [], id="corrupt-gzip"),
]


@pytest.mark.parametrize(("body", "headers", "status", "fragments"), BAD_JSON_CASES)
def test_bad_input_is_a_clear_4xx(
    gateway: Any, body: bytes, headers: dict[str, str], status: int, fragments: list[str]
) -> None:
    r = gateway.client.post("/v2/models/clf/infer", content=body, headers=headers)
    _error(r, status, *fragments)
    # The server keeps serving.
    assert (
        gateway.client.post("/v2/models/clf/infer", json=v2_body(np.zeros((1, 4), np.float32))).status_code
        == 200
    )


def test_binary_size_that_disagrees_with_shape(gateway: Any) -> None:
    header = orjson.dumps(
        {
            "inputs": [
                {"name": "input", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 12}}
            ]
        }
    )
    r = gateway.client.post(
        "/v2/models/clf/infer",
        content=header + struct.pack("<3f", 1, 2, 3),
        headers={"inference-header-content-length": str(len(header))},
    )
    _error(r, 400, "input")


def test_nan_is_rejected_by_default(gateway: Any) -> None:
    header = orjson.dumps(
        {
            "inputs": [
                {"name": "input", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}
            ]
        }
    )
    x = np.array([[1, np.nan, 2, 3]], np.float32)
    r = gateway.client.post(
        "/v2/models/clf/infer",
        content=header + x.tobytes(),
        headers={"inference-header-content-length": str(len(header))},
    )
    _error(r, 422, "NaN")


def test_body_over_the_limit_is_413(make_server: Any) -> None:
    server = make_server(max_body_bytes=2048)
    big = v2_body(np.zeros((200, 4), np.float32))
    _error(server.client.post("/v2/models/clf/infer", json=big), 413, "limit")
    bomb = gzip.compress(orjson.dumps(big) + b" " * 100_000)
    assert len(bomb) < 2048
    _error(
        server.client.post("/v2/models/clf/infer", content=bomb, headers={"content-encoding": "gzip"}), 413
    )


def test_unknown_model_and_version(gateway: Any) -> None:
    x = v2_body(np.zeros((1, 4), np.float32))
    _error(gateway.client.post("/v2/models/nope/infer", json=x), 404, "nope")
    _error(gateway.client.post("/v2/models/clf/versions/7/infer", json=x), 404, "version 7")
    _error(gateway.client.post("/v2/models/clf/versions/abc/infer", json=x), 404, "abc")
    _error(gateway.client.get("/v2/models/nope"), 404)
    assert gateway.client.get("/v2/models/nope/ready").status_code == 404
    _error(gateway.client.get("/no/such/route"), 404)


def test_metrics_count_requests_by_outcome(gateway: Any) -> None:
    x = v2_body(np.zeros((1, 4), np.float32))
    for _ in range(3):
        assert gateway.client.post("/v2/models/clf/infer", json=x).status_code == 200
    gateway.client.post("/v2/models/clf/infer", content=b"{bad")
    gateway.client.post("/v2/models/nope/infer", json=x)
    text = gateway.client.get("/metrics").text
    assert 'sluice_requests_total{model="clf",outcome="ok",reason="default",version="1"} 3.0' in text
    assert (
        'sluice_requests_total{model="clf",outcome="client_error",reason="default",version="1"} 1.0' in text
    )
    assert 'sluice_unrouted_requests_total{code="404"} 1.0' in text
    assert 'sluice_model_version_ready{model="multi",version="1"} 1.0' in text
    assert "nope" not in text


def test_admin_api_is_off_without_a_token(gateway: Any) -> None:
    _error(gateway.client.post("/v2/repository/models/clf/unload"), 403, "SLUICE_ADMIN_TOKEN")


def test_admin_api_refuses_a_wrong_token(make_server: Any) -> None:
    server = make_server(admin_token="s3cret")
    _error(server.client.post("/v2/repository/models/clf/unload"), 401)
    _error(
        server.client.post("/v2/repository/models/clf/unload", headers={"authorization": "Bearer wrong"}), 401
    )
    ok = {"authorization": "Bearer s3cret"}
    assert server.client.post("/v2/repository/models/clf/unload", headers=ok).status_code == 200
    assert server.client.get("/v2/models/clf/ready").status_code == 404
    assert server.client.post("/v2/repository/models/clf/load", headers=ok).status_code == 200
    assert server.client.get("/v2/models/clf/ready").status_code == 200
