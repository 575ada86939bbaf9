"""Shared fixtures: tiny scikit-learn models converted into a repository, and a real uvicorn on 127.0.0.1.

The server runs in a thread of the test process on a socket the fixture binds and puts in listening
state first: a client may connect at once, and uvicorn answers only after its lifespan (the first
repository scan) has finished, so no test waits by sleeping.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from onnx import TensorProto
from onnx import helper as oh
from sklearn.datasets import make_classification, make_regression
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sluice.converters import convert
from sluice.server.app import create_app
from sluice.server.cli import uvicorn_options
from sluice.server.settings import Settings, load_settings

N_FEATURES = 4


def _fit_models() -> dict[str, tuple[Any, np.ndarray]]:
    x, y = make_classification(
        n_samples=400, n_features=N_FEATURES, n_informative=3, n_redundant=0, random_state=0
    )
    x3, y3 = make_classification(
        n_samples=400, n_features=N_FEATURES, n_informative=3, n_redundant=0, n_classes=3, random_state=1
    )
    xr, yr = make_regression(n_samples=400, n_features=N_FEATURES, noise=0.1, random_state=2)
    return {
        "clf": (make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y), x.astype(np.float32)),
        "multi": (make_pipeline(StandardScaler(), LogisticRegression()).fit(x3, y3), x3.astype(np.float32)),
        "reg": (make_pipeline(StandardScaler(), Ridge()).fit(xr, yr), xr.astype(np.float32)),
    }


def slow_onnx() -> bytes:
    """A bare ONNX graph (no manifest) that echoes ``x`` [-1, 4] after a busy loop of ``1000 * max(x)`` steps.

    Its latency is chosen by the request (about 2.5 ms per unit of ``max(x)`` here), which lets tests hold
    a request in flight, expire deadlines and overload queues without a test hook in the server.
    """
    f, b = TensorProto.FLOAT, TensorProto.BOOL
    body = oh.make_graph(
        [
            oh.make_node("Constant", [], ["one"], value=oh.make_tensor("one", f, [], [1.0])),
            oh.make_node("Add", ["acc_in", "one"], ["acc_out"]),
            oh.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "spin",
        [
            oh.make_tensor_value_info("i", TensorProto.INT64, []),
            oh.make_tensor_value_info("cond_in", b, []),
            oh.make_tensor_value_info("acc_in", f, []),
        ],
        [oh.make_tensor_value_info("cond_out", b, []), oh.make_tensor_value_info("acc_out", f, [])],
    )
    nodes = [
        oh.make_node("Constant", [], ["k"], value=oh.make_tensor("k", f, [], [1000.0])),
        oh.make_node("Constant", [], ["zero"], value=oh.make_tensor("zero", f, [], [0.0])),
        oh.make_node("Constant", [], ["true"], value=oh.make_tensor("true", b, [], [True])),
        oh.make_node("ReduceMax", ["x"], ["top"], keepdims=0),
        oh.make_node("Mul", ["top", "k"], ["steps_f"]),
        oh.make_node("Cast", ["steps_f"], ["steps"], to=TensorProto.INT64),
        oh.make_node("Loop", ["steps", "true", "zero"], ["acc"], body=body),
        oh.make_node("Mul", ["acc", "zero"], ["nothing"]),
        oh.make_node("Add", ["x", "nothing"], ["y"]),
    ]
    graph = oh.make_graph(
        nodes,
        "slow",
        [oh.make_tensor_value_info("x", f, ["n", 4])],
        [oh.make_tensor_value_info("y", f, ["n", 4])],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool's path; skipped only outside CI when absent (.ci/run installs it)."""
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not installed (Debian package prometheus); CI must run this check")
        pytest.skip("promtool is not installed (apt-get install prometheus); CI runs this check")
    return found


@pytest.fixture(scope="session")
def fitted() -> dict[str, tuple[Any, np.ndarray]]:
    """Fitted models by name, with the float32 sample they were trained on."""
    return _fit_models()


@pytest.fixture(scope="session")
def built_repository(tmp_path_factory: pytest.TempPathFactory, fitted: dict[str, Any]) -> Path:
    root = tmp_path_factory.mktemp("built") / "models"
    root.mkdir()
    for name, (model, sample) in fitted.items():
        convert(model, sample, repository=root, name=name)
    (root / "slow" / "1").mkdir(parents=True)
    (root / "slow" / "1" / "model.onnx").write_bytes(slow_onnx())
    # Its cost depends on the input, so the load-time profile (zeros: cheap) would run it inline.
    (root / "slow" / "config.yaml").write_text("batching: {execution: thread}\n")
    return root


@pytest.fixture
def repository(tmp_path: Path, built_repository: Path) -> Path:
    """A private copy of the tiny repository that a test may change."""
    target = tmp_path / "models"
    shutil.copytree(built_repository, target)
    return target


class GatewayServer:
    """A real uvicorn serving ``create_app(settings)`` on 127.0.0.1 in a background thread."""

    def __init__(self, settings: Settings) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(settings)
        # The production options (protocol, time-outs, limits), on a socket bound here.
        options = {**uvicorn_options(settings), "log_level": "warning", "timeout_graceful_shutdown": 5}
        for key in ("host", "port"):
            options.pop(key)
        config = uvicorn.Config(self.app, **options)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> GatewayServer:
        self.thread.start()
        self.client = httpx.Client(base_url=self.url, timeout=30)
        # Answered only once the lifespan has started (see the module docstring).
        assert self.client.get("/v2/health/ready").status_code == 200
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()
        assert not self.thread.is_alive(), "uvicorn did not stop"


@pytest.fixture
def make_server(repository: Path) -> Iterator[Any]:
    """``make_server(**settings)`` starts a gateway on the test's repository copy; all stop at teardown."""
    started: list[GatewayServer] = []

    def start(**overrides: Any) -> GatewayServer:
        overrides.setdefault("repository", repository)
        overrides.setdefault("poll_interval_s", 0)
        server = GatewayServer(load_settings(**overrides)).__enter__()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.__exit__(None, None, None)


@pytest.fixture
def gateway(make_server: Any) -> GatewayServer:
    server: GatewayServer = make_server()
    return server
