"""The real ``tritonclient`` against a real gateway: the protocol conformance check."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.integration


@pytest.fixture
def client(gateway: Any) -> Any:
    c = triton.InferenceServerClient(f"127.0.0.1:{gateway.port}")
    yield c
    c.close()


def test_health_and_metadata(client: Any) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "sluice"
    assert "binary_tensor_data" in meta["extensions"]
    assert client.is_model_ready("clf")
    assert client.is_model_ready("clf", "1")
    model = client.get_model_metadata("clf")
    assert model["versions"] == ["1"]
    assert model["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert {o["name"] for o in model["outputs"]} == {"label", "probabilities"}
    config = client.get_model_config("clf")
    assert config["max_batch_size"] > 0
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [4]}]
    index = client.get_model_repository_index()
    assert {(m["name"], m["state"]) for m in index} == {
        ("clf", "READY"),
        ("multi", "READY"),
        ("reg", "READY"),
        ("slow", "READY"),
    }


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_matches_scikit_learn(client: Any, fitted: dict[str, Any], binary: bool) -> None:
    model, sample = fitted["multi"]
    x = sample[:7]
    inp = triton.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    outputs = [
        triton.InferRequestedOutput("label", binary_data=binary),
        triton.InferRequestedOutput("probabilities", binary_data=binary),
    ]
    result = client.infer("multi", [inp], outputs=outputs, request_id="r-1")
    assert result.get_response()["id"] == "r-1"
    np.testing.assert_array_equal(result.as_numpy("label"), model.predict(x))
    np.testing.assert_allclose(result.as_numpy("probabilities"), model.predict_proba(x), atol=1e-5)


def test_infer_default_outputs_and_version(client: Any, fitted: dict[str, Any]) -> None:
    model, sample = fitted["reg"]
    x = sample[:3]
    inp = triton.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer("reg", [inp], model_version="1")
    (name,) = [o["name"] for o in result.get_response()["outputs"]]
    np.testing.assert_allclose(result.as_numpy(name).ravel(), model.predict(x), rtol=1e-4, atol=1e-3)


def test_compressed_request_and_parameters(client: Any, fitted: dict[str, Any]) -> None:
    model, sample = fitted["clf"]
    x = sample[:5]
    inp = triton.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    for algorithm in ("gzip", "deflate"):
        result = client.infer(
            "clf", [inp], request_compression_algorithm=algorithm, timeout=5_000_000, priority=1
        )
        np.testing.assert_array_equal(result.as_numpy("label"), model.predict(x))


@pytest.mark.parametrize("binary", [False, True])
def test_compressed_responses(client: Any, fitted: dict[str, Any], binary: bool) -> None:
    model, sample = fitted["clf"]
    x = np.repeat(sample, 40, axis=0)[:2000]  # a response of tens of kB, over the compression threshold
    inp = triton.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    outputs = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("label", "probabilities")]
    for algorithm in ("gzip", "deflate"):
        result = client.infer("clf", [inp], outputs=outputs, response_compression_algorithm=algorithm)
        assert result.get_response()["model_name"] == "clf"
        np.testing.assert_array_equal(result.as_numpy("label"), model.predict(x))
        np.testing.assert_allclose(result.as_numpy("probabilities"), model.predict_proba(x), atol=1e-5)


def test_errors_reach_the_client(client: Any) -> None:
    inp = triton.InferInput("input", [1, 3], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 3), np.float32))
    with pytest.raises(InferenceServerException, match=r"\[-1, 4\]"):
        client.infer("clf", [inp])
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        client.infer("nope", [inp])
