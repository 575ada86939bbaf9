"""Dynamic batching through real HTTP: exact answers under concurrency, shedding, deadlines, disconnects."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from tests.integration.support import metric, wait_for

pytestmark = pytest.mark.integration


def slow_body(units: float, **parameters: Any) -> dict[str, Any]:
    """A request to the ``slow`` model that holds it for about ``2.5 ms x units``."""
    body: dict[str, Any] = {
        "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [units, 0, 0, 0]}]
    }
    if parameters:
        body["parameters"] = parameters
    return body


def in_background(
    server: Any, body: dict[str, Any], result: dict[str, Any], timeout: float = 60
) -> threading.Thread:
    def call() -> None:
        try:
            result["response"] = httpx.post(f"{server.url}/v2/models/slow/infer", json=body, timeout=timeout)
        except httpx.TimeoutException as exc:
            result["error"] = exc

    thread = threading.Thread(target=call)
    thread.start()
    return thread


def test_64_concurrent_clients_get_exactly_their_own_rows(make_server: Any, repository: Path) -> None:
    (repository / "clf" / "config.yaml").write_text(
        "batching: {max_queue_delay_us: 5000, max_batch_size: 64}\n"
    )
    server = make_server()
    rng = np.random.default_rng(7)
    requests = [rng.normal(size=(int(rng.integers(1, 4)), 4)).astype(np.float32) for _ in range(64)]
    session = ort.InferenceSession(
        str(repository / "clf" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    alone = [session.run(None, {"input": x}) for x in requests]

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            bodies = [
                {
                    "inputs": [
                        {
                            "name": "input",
                            "shape": list(x.shape),
                            "datatype": "FP32",
                            "data": x.ravel().tolist(),
                        }
                    ]
                }
                for x in requests
            ]
            return await asyncio.gather(*(client.post("/v2/models/clf/infer", json=b) for b in bodies))

    responses = asyncio.run(main())
    for response, x, (labels, probabilities) in zip(responses, requests, alone, strict=True):
        assert response.status_code == 200, response.text
        out = {o["name"]: o for o in response.json()["outputs"]}
        assert out["label"]["data"] == labels.tolist()
        got = np.array(out["probabilities"]["data"], np.float32).reshape(len(x), 2)
        np.testing.assert_allclose(got, probabilities, rtol=1e-6, atol=1e-7)
    batches = metric(server, 'sluice_batch_size_rows_count{model="clf",version="1"}')
    rows = metric(server, 'sluice_batch_size_rows_sum{model="clf",version="1"}')
    assert rows == sum(len(x) for x in requests)
    assert batches < 64, "requests arriving together were never batched"


def test_overload_is_shed_with_503_and_retry_after(make_server: Any, repository: Path) -> None:
    (repository / "slow" / "config.yaml").write_text("batching: {execution: thread, max_queue_size: 4}\n")
    server = make_server()

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            return await asyncio.gather(
                *(client.post("/v2/models/slow/infer", json=slow_body(8)) for _ in range(40))
            )

    responses = asyncio.run(main())
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {200, 503}, statuses
    for r in responses:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "1"
            assert r.json()["code"] == "overloaded"
    shed = metric(server, 'sluice_shed_requests_total{model="slow",reason="queue_full",version="1"}')
    assert shed == statuses.count(503)
    # Once the load stops, the server answers normally.
    assert server.client.post("/v2/models/slow/infer", json=slow_body(1)).status_code == 200


def test_deadline_expires_in_the_queue_with_504(make_server: Any) -> None:
    server = make_server()
    first: dict[str, Any] = {}
    thread = in_background(server, slow_body(400), first)
    wait_for(lambda: metric(server, "sluice_in_flight_requests") == 1, "the long request to start", 20)
    r = server.client.post("/v2/models/slow/infer", json=slow_body(1, timeout=50_000))
    assert r.status_code == 504 and r.json()["code"] == "deadline_exceeded"
    thread.join()
    assert first["response"].status_code == 200
    assert metric(server, 'sluice_shed_requests_total{model="slow",reason="deadline",version="1"}') == 1


def test_a_client_that_disconnects_leaves_the_queue(make_server: Any) -> None:
    server = make_server()
    first: dict[str, Any] = {}
    second: dict[str, Any] = {}
    thread = in_background(server, slow_body(400), first)
    wait_for(lambda: metric(server, "sluice_in_flight_requests") == 1, "the long request to start", 20)
    impatient = in_background(server, slow_body(400), second, timeout=0.2)
    impatient.join()
    assert isinstance(second.get("error"), httpx.TimeoutException)
    wait_for(
        lambda: (
            metric(server, 'sluice_shed_requests_total{model="slow",reason="disconnected",version="1"}') == 1
        ),
        "the disconnect to be noticed",
        20,
    )
    thread.join()
    assert first["response"].status_code == 200
    # Only the first request ever ran.
    assert metric(server, 'sluice_batch_size_rows_count{model="slow",version="1"}') == 1
    assert (
        metric(
            server, 'sluice_requests_total{model="slow",outcome="disconnected",reason="default",version="1"}'
        )
        == 1
    )


def test_config_endpoint_shows_how_each_version_runs(gateway: Any) -> None:
    config = gateway.client.get("/v2/models/clf/config").json()
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 0
    execution = json.loads(config["parameters"]["sluice_execution"]["string_value"])
    assert execution["batching"] is True and execution["chosen_by"] == "auto"
    assert execution["execution"] in {"inline", "thread"}
    assert set(execution["profile"]["per_row_us"]) == {"1", "8", "32"}
    slow = gateway.client.get("/v2/models/slow/config").json()
    assert "sluice_execution" in slow["parameters"]
