"""What any unauthenticated client can send: never a 5xx, always a JSON error, and the server keeps serving.

Targeted cases first (each was a 500 or a leak once), then a bounded property-based fuzz (Hypothesis)
over paths, versions, headers and v2 JSON, v2 binary and v1 bodies against a real uvicorn.
"""

from __future__ import annotations

import string
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

GOOD = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [0.1, 0.2, 0.3, 0.4]}]}


def assert_client_error(r: httpx.Response, *fragments: str) -> None:
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    body = r.json()
    assert set(body) >= {"error", "code"}, body
    for fragment in fragments:
        assert fragment in body["error"], (fragment, body)


def assert_serves(client: httpx.Client) -> None:
    r = client.post("/v2/models/clf/infer", json=GOOD)
    assert r.status_code == 200, r.text


def nested(depth: int, leaf: str) -> str:
    return "[" * depth + leaf + "]" * depth


@pytest.mark.parametrize("depth", [40, 200, 1000])
def test_deeply_nested_data_is_a_400(gateway: Any, depth: int) -> None:
    for datatype, leaf in (("BYTES", '"a"'), ("FP32", "0.5"), ("BOOL", "true")):
        data = nested(depth, leaf)
        body = (
            f'{{"inputs": [{{"name": "input", "shape": [1, 4], "datatype": "{datatype}", "data": {data}}}]}}'
        )
        assert_client_error(gateway.client.post("/v2/models/clf/infer", content=body.encode()))
        instances = f'{{"instances": {data}}}'
        assert_client_error(gateway.client.post("/v1/models/clf:predict", content=instances.encode()))
    assert_serves(gateway.client)


@pytest.mark.parametrize(
    "version",
    ["%C2%B2", "%D9%A1", "%EF%BC%91", "9" * 5000, "0", "-1", "1.0", "%20%31", "1e3"],
    ids=[
        "superscript-two",
        "arabic-one",
        "fullwidth-one",
        "5000-digits",
        "zero",
        "negative",
        "float",
        "space",
        "exp",
    ],
)
def test_odd_versions_in_the_path_are_404_never_aliases(gateway: Any, version: str) -> None:
    for path in (
        f"/v2/models/clf/versions/{version}/infer",
        f"/v1/models/clf/versions/{version}:predict",
        f"/v2/models/clf/versions/{version}",
        f"/v2/models/clf/versions/{version}/ready",
    ):
        r = (
            gateway.client.post(path, json=GOOD)
            if "infer" in path or "predict" in path
            else gateway.client.get(path)
        )
        assert r.status_code == 404, (path, r.status_code, r.text[:200])
        assert len(r.text) < 1000  # a 5,000-digit version is not echoed whole
    assert_serves(gateway.client)


def test_odd_override_values_are_400(make_server: Any, tmp_path: Any) -> None:
    rollouts = tmp_path / "rollouts.yaml"
    rollouts.write_text(
        "models:\n  clf:\n    traffic:\n      weights: {1: 100}\n"
        "      override: {header: x-model-version, allow: [1]}\n"
    )
    server = make_server(rollout_file=rollouts)
    for value in ("²", "١", "１", "9" * 5000, "", "1,1", "01x"):
        r = server.client.post("/v2/models/clf/infer", json=GOOD, headers={"x-model-version": value.encode()})
        assert_client_error(r, "not an allowed version")
        assert len(r.text) < 1000
    r = server.client.post("/v2/models/clf/infer", json=GOOD, headers={"x-model-version": "1"})
    assert r.status_code == 200 and r.headers["x-route-reason"] == "override"


def test_an_odd_version_directory_is_skipped_not_served(make_server: Any, repository: Any) -> None:
    (repository / "clf" / "١").mkdir()
    (repository / "clf" / "007x").mkdir()
    (repository / "clf" / "stray.txt").write_text("not a version")
    server = make_server()
    index = server.client.post("/v2/repository/index").json()
    assert {row["version"] for row in index if row["name"] == "clf"} == {"1"}
    assert_serves(server.client)


def test_error_bodies_leak_no_paths_or_library_text(make_server: Any, repository: Any) -> None:
    (repository / "clf" / "2").mkdir()
    (repository / "clf" / "2" / "model.onnx").write_bytes(b"not an onnx graph")
    server = make_server()
    public = [
        server.client.post("/v2/repository/index").text,
        server.client.post("/v2/models/clf/versions/2/infer", json=GOOD).text,
        server.client.get("/v2/models/clf/versions/2/ready").text,
    ]
    for text in public:
        assert str(repository) not in text, text
        assert "onnxruntime" not in text.lower() and "INVALID_PROTOBUF" not in text, text
    row = next(r for r in server.client.post("/v2/repository/index").json() if r["version"] == "2")
    assert row["state"] == "UNAVAILABLE" and "clf/2/model.onnx" in row["reason"]


# ----- property-based fuzz -------------------------------------------------------------------------

NAMES = st.sampled_from(["clf", "multi", "reg", "nope", "", "clf/", "..", "%2e%2e", "c%00f", "\u00e9"])
SEGMENTS = st.one_of(
    st.sampled_from(["1", "2", "0", "-1", "²", "١", "１", "stable", "canary", "9" * 60]),
    st.text(alphabet=string.ascii_letters + string.digits + "%._-", max_size=12),
)
PATHS = st.builds(
    lambda name, kind, segment, tail: f"/{tail[0]}/models/{name}{kind}{segment if kind else ''}{tail[1]}",
    NAMES,
    st.sampled_from(["", "/versions/", "/labels/"]),
    SEGMENTS,
    st.sampled_from([("v2", "/infer"), ("v1", ":predict"), ("v2", ""), ("v2", "/ready"), ("v2", "/config")]),
)
JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=8),
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30,
)
DATATYPES = st.sampled_from(["FP32", "FP64", "INT64", "BOOL", "BYTES", "UINT8", "FP16", "fp32", "", "X"])
SHAPES = st.one_of(
    st.lists(st.integers(min_value=-3, max_value=2**40), max_size=4),
    st.just([1, 4]),
    st.just([2, 4]),
    JSON_VALUES,
)
INPUTS = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["input", "x", "", "label"]),
        "shape": SHAPES,
        "datatype": DATATYPES,
        "data": st.one_of(JSON_VALUES, st.lists(st.floats(width=32), min_size=0, max_size=8)),
    },
    optional={
        "parameters": st.dictionaries(st.sampled_from(["binary_data_size", "x"]), JSON_VALUES, max_size=2)
    },
)
V2_BODIES = st.fixed_dictionaries(
    {"inputs": st.one_of(st.lists(INPUTS, max_size=3), JSON_VALUES)},
    optional={
        "outputs": st.one_of(
            JSON_VALUES, st.lists(st.fixed_dictionaries({"name": st.sampled_from(["label", "nope", ""])}))
        ),
        "parameters": st.dictionaries(
            st.sampled_from(["timeout", "priority", "binary_data_output", "other"]), JSON_VALUES, max_size=3
        ),
        "id": JSON_VALUES,
    },
)
V1_BODIES = st.one_of(
    st.fixed_dictionaries({"instances": JSON_VALUES}),
    st.fixed_dictionaries({"inputs": JSON_VALUES}),
    JSON_VALUES,
)
BODIES = st.one_of(
    V2_BODIES.map(orjson.dumps),
    V1_BODIES.map(orjson.dumps),
    st.binary(max_size=64),
    st.tuples(V2_BODIES.map(orjson.dumps), st.binary(max_size=32)).map(lambda p: p[0] + p[1]),
)
HEADERS = st.dictionaries(
    st.sampled_from(
        [
            "content-type",
            "content-encoding",
            "inference-header-content-length",
            "x-model-version",
            "x-user",
            "accept-encoding",
        ]
    ),
    st.one_of(
        st.sampled_from(["application/json", "gzip", "deflate", "br", "0", "-5", "999999999999", "1", "²"]),
        st.text(alphabet=string.printable.strip(), max_size=12),
    ),
    max_size=3,
)


def test_fuzz_never_a_5xx_and_the_server_keeps_serving(make_server: Any, tmp_path: Any) -> None:
    rollouts = tmp_path / "rollouts.yaml"
    rollouts.write_text(
        "models:\n  clf:\n    traffic:\n      weights: {1: 100}\n"
        "      override: {header: x-model-version, allow: [1]}\n      sticky: {key: 'header:x-user'}\n"
    )
    server = make_server(rollout_file=rollouts, max_body_bytes=1 << 20)
    client: httpx.Client = server.client

    @settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(path=PATHS, body=BODIES, headers=HEADERS, method=st.sampled_from(["POST", "POST", "GET", "PUT"]))
    def check(path: str, body: bytes, headers: dict[str, str], method: str) -> None:
        try:
            r = client.request(
                method, path, content=body, headers={k: v.encode() for k, v in headers.items()}
            )
        except httpx.InvalidURL:
            return  # httpx refuses to send it: no server would see it
        assert r.status_code < 500, (method, path, headers, body[:200], r.status_code, r.text[:300])
        if r.status_code >= 400:
            assert set(r.json()) >= {"error", "code"}, r.text[:300]

    check()
    assert_serves(client)
    x = np.zeros((1, 4), np.float32).tolist()
    assert client.post("/v1/models/clf:predict", json={"instances": x}).status_code == 200


# ----- a client cannot move a rollout --------------------------------------------------------------

CANARY = """
models:
  clf:
    rollout:
      stable: 1
      candidate: 2
      steps: [{weight: 50, for: 1h}]
      analysis: {interval: 0.2s, window: 2s, min_samples: 10, failure_limit: 2}
      gates:
        - {metric: error_rate, max: 0.05}
"""


def test_crafted_requests_never_roll_back_a_healthy_candidate(
    make_server: Any, repository: Any, tmp_path: Any, fitted: dict[str, Any]
) -> None:
    from tests.integration.rollout_helpers import AUTH, TOKEN, copy_version, load, wait_for

    _, sample = fitted["clf"]
    copy_version(repository, "clf", 1, 2)
    rollouts = tmp_path / "rollouts.yaml"
    rollouts.write_text(CANARY)
    server = make_server(rollout_file=rollouts, state_dir=tmp_path / "state", admin_token=TOKEN)
    client: httpx.Client = server.client

    def status() -> dict[str, Any]:
        rollout: dict[str, Any] = client.get("/v2/rollouts/clf", headers=AUTH).json()["models"]["clf"][
            "rollout"
        ]
        return rollout

    def passes() -> float:
        line = 'sluice_rollout_gate_results_total{metric="error_rate",model="clf",result="pass"} '
        found = [float(x.split()[-1]) for x in client.get("/metrics").text.splitlines() if x.startswith(line)]
        return found[0] if found else 0.0

    wait_for(lambda: status()["phase"] == "progressing", "the first step")
    crafted: list[bytes] = [
        orjson.dumps({**GOOD, "parameters": {"timeout": 1}}),  # a deadline of 1 us, set by the client
        b'{"inputs": [',  # malformed JSON
        orjson.dumps({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}),
        orjson.dumps({**GOOD, "outputs": [{"name": "nope"}]}),
    ]
    statuses: dict[int, int] = {}
    with load(server.url, sample, threads=2, seconds=30):
        for i in range(400):  # bounded: the attack is a few hundred requests, as the report's 138
            r = client.post("/v2/models/clf/infer", content=crafted[i % len(crafted)])
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        evaluated = passes()
        wait_for(lambda: passes() >= evaluated + 5, "five more gate evaluations after the attack")
    assert statuses.get(504, 0) > 0 and statuses.get(400, 0) > 0, statuses  # the attack did land
    assert status()["phase"] == "progressing"
    text = client.get("/metrics").text
    assert 'outcome="client_timeout"' in text
    assert 'sluice_rollout_gate_results_total{metric="error_rate",model="clf",result="fail"}' not in text


# ----- slow clients and malformed HTTP -------------------------------------------------------------


def raw_exchange(port: int, data: bytes, *, wait_s: float = 15) -> bytes:
    """Send ``data`` on a fresh connection, then read until the server closes it (bounded by ``wait_s``)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def test_slow_headers_get_a_json_408_and_the_connection_closes(make_server: Any) -> None:
    server = make_server(header_timeout_s=0.5, body_timeout_s=0.5)
    # Headers that never end: the server must cut the connection, not wait for ever.
    answer = raw_exchange(server.port, b"POST /v2/models/clf/infer HTTP/1.1\r\nhost: x\r\nx-slow: 1")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer[:200]
    assert orjson.loads(body)["code"] == "request_timeout"
    # A connection that sends nothing at all is closed too.
    assert raw_exchange(server.port, b"").startswith(b"HTTP/1.1 408")
    # A body that never arrives whole: the connection is closed, no answer is owed.
    partial = b'POST /v2/models/clf/infer HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{"inputs"'
    assert raw_exchange(server.port, partial) == b""
    assert_serves(server.client)


def test_a_malformed_request_line_gets_a_json_400(gateway: Any) -> None:
    answer = raw_exchange(gateway.port, b"GARBAGE\x00 / HTTP/9.9\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), answer[:200]
    assert orjson.loads(body) == {"error": "malformed HTTP request", "code": "bad_request"}
    assert_serves(gateway.client)


def test_json_has_its_own_smaller_limit_than_binary_tensors(make_server: Any) -> None:
    server = make_server(max_json_bytes=4096, max_body_bytes=1 << 20)
    rows = np.random.default_rng(0).random((400, 4), dtype=np.float32)
    body = {
        "inputs": [{"name": "input", "shape": [400, 4], "datatype": "FP32", "data": rows.ravel().tolist()}]
    }
    assert_client_error(server.client.post("/v2/models/clf/infer", json=body), "binary tensors")
    assert server.client.post("/v2/models/clf/infer", json=body).status_code == 413
    header = orjson.dumps(
        {"inputs": [{**body["inputs"][0], "data": None, "parameters": {"binary_data_size": rows.nbytes}}]}
    ).replace(b',"data":null', b"")
    r = server.client.post(
        "/v2/models/clf/infer",
        content=header + rows.tobytes(),
        headers={"inference-header-content-length": str(len(header))},
    )
    assert r.status_code == 200, r.text  # the same rows as binary tensors fit easily


def test_the_monitoring_endpoint_follows_the_admin_token_when_one_is_set(make_server: Any) -> None:
    open_server = make_server()
    assert open_server.client.get("/v2/models/clf/monitoring").status_code == 200
    guarded = make_server(admin_token="s3cret")
    assert guarded.client.get("/v2/models/clf/monitoring").status_code == 401
    ok = guarded.client.get("/v2/models/clf/monitoring", headers={"authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    public = make_server(admin_token="s3cret", monitoring_access="public")
    assert public.client.get("/v2/models/clf/monitoring").status_code == 200


# ----- the rollouts file survives what editors and people do to it ---------------------------------

SPLIT = "models:\n  clf:\n    traffic:\n      weights: {1: 100}\n    labels: {blue: 1}\n"


def test_an_empty_rollouts_file_is_refused_while_serving_and_a_deleted_one_stops_routing(
    make_server: Any, tmp_path: Any
) -> None:
    from tests.integration.rollout_helpers import wait_for

    rollouts = tmp_path / "rollouts.yaml"
    rollouts.write_text(SPLIT)
    server = make_server(rollout_file=rollouts, state_dir=tmp_path / "state")
    client: httpx.Client = server.client

    def rejected() -> float:
        line = "sluice_rollout_config_rejected_total "
        return sum(
            float(x.split()[-1]) for x in client.get("/metrics").text.splitlines() if x.startswith(line)
        )

    def blue() -> int:
        return client.post("/v2/models/clf/labels/blue/infer", json=GOOD).status_code

    assert blue() == 200
    for n, text in enumerate(("", "# only a comment\n", "models: {}\n"), start=1):
        rollouts.write_text(text)
        wait_for(lambda n=n: rejected() >= n, f"the rejection of {text!r}")
        assert blue() == 200  # the previous routing stays
    rollouts.write_text("allow_empty: true\nmodels: {}\n")  # said explicitly: applied
    wait_for(lambda: blue() == 404, "the explicit empty file")
    rollouts.write_text(SPLIT)
    wait_for(lambda: blue() == 200, "the file again")
    rollouts.unlink()
    wait_for(lambda: blue() == 404, "routing by the deleted file to stop")
    assert_serves(client)


def test_large_json_bodies_are_decoded_off_the_loop_with_the_same_answers(gateway: Any) -> None:
    rows = np.random.default_rng(1).random((50_000, 4), dtype=np.float32)
    body = {
        "inputs": [{"name": "input", "shape": [50_000, 4], "datatype": "FP32", "data": rows.ravel().tolist()}]
    }
    data = orjson.dumps(body)
    assert len(data) > 1024 * 1024  # past OFFLOAD_BYTES: decoded in a worker process
    r = gateway.client.post("/v2/models/clf/infer", content=data)
    assert r.status_code == 200, r.text[:300]
    small = gateway.client.post(
        "/v2/models/clf/infer",
        json={
            "inputs": [
                {"name": "input", "shape": [2, 4], "datatype": "FP32", "data": rows[:2].ravel().tolist()}
            ]
        },
    )
    label = next(o for o in r.json()["outputs"] if o["name"] == "label")
    assert label["shape"] == [50_000] and label["data"][:2] == small.json()["outputs"][0]["data"]
    # Errors raised in the worker process come back as the same 4xx, with their details.
    body["inputs"][0]["shape"] = [50_000, 3]
    assert_client_error(gateway.client.post("/v2/models/clf/infer", content=orjson.dumps(body)))
    body["inputs"][0]["datatype"] = "BYTES"
    r = gateway.client.post("/v2/models/clf/infer", content=orjson.dumps(body))
    assert_client_error(r)
    assert r.json()["details"]["input"] == "input"  # details survive the trip back from the worker
