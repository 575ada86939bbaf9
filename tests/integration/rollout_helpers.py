"""Building candidate versions and driving a gateway under bounded load, for the rollout tests."""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
from onnx import TensorProto
from onnx import helper as oh

from sluice.converters.artifact.manifest import Manifest
from tests.integration.support import wait_for

__all__ = ["AUTH", "TOKEN", "wait_for"]

TOKEN = "s3cret-admin"
AUTH = {"authorization": f"Bearer {TOKEN}"}


def copy_version(repository: Path, model: str, source: int, target: int) -> Path:
    shutil.copytree(repository / model / str(source), repository / model / str(target))
    return repository / model / str(target)


def rewrite_model(directory: Path, model: onnx.ModelProto) -> None:
    """Replace ``model.onnx`` and keep the manifest's sha256 honest."""
    data = model.SerializeToString()
    (directory / "model.onnx").write_bytes(data)
    manifest = Manifest.read(directory)
    manifest.sha256 = hashlib.sha256(data).hexdigest()
    manifest.write(directory)


def make_failing_on_large_first_feature(directory: Path, threshold: float) -> None:
    """Make the graph reject rows whose first feature is above ``threshold``, inside onnxruntime.

    A Reshape in front of the classifier targets ``[-1, 4 + (max(x[:, 0]) > threshold)]``: for an
    offending row the target is ``[-1, 5]``, which 4 values cannot fill, so onnxruntime fails the run
    (a 500 from the gateway) exactly as a model that breaks on part of its input domain would.
    """
    model = onnx.load(directory / "model.onnx")
    graph = model.graph
    name = graph.input[0].name
    checked = name + "_checked"
    for node in graph.node:
        node.input[:] = [checked if i == name else i for i in node.input]
    i64, f = TensorProto.INT64, TensorProto.FLOAT
    prefix = [
        oh.make_node("Constant", [], ["c_zero"], value=oh.make_tensor("c_zero", i64, [], [0])),
        oh.make_node("Constant", [], ["c_limit"], value=oh.make_tensor("c_limit", f, [], [threshold])),
        oh.make_node("Constant", [], ["c_four"], value=oh.make_tensor("c_four", i64, [1], [4])),
        oh.make_node("Constant", [], ["c_minus"], value=oh.make_tensor("c_minus", i64, [1], [-1])),
        oh.make_node("Gather", [name, "c_zero"], ["first"], axis=1),
        oh.make_node("ReduceMax", ["first"], ["top"], keepdims=0),
        oh.make_node("Greater", ["top", "c_limit"], ["bad"]),
        oh.make_node("Cast", ["bad"], ["bad_i"], to=i64),
        oh.make_node("Add", ["c_four", "bad_i"], ["width"]),
        oh.make_node("Concat", ["c_minus", "width"], ["target"], axis=0),
        oh.make_node("Reshape", [name, "target"], [checked]),
    ]
    nodes = prefix + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    rewrite_model(directory, model)


def v2_row(row: np.ndarray) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": row.tolist()}]}


@contextmanager
def load(url: str, rows: np.ndarray, *, threads: int = 3, seconds: float = 18) -> Iterator[dict[str, int]]:
    """Unpinned requests from ``threads`` clients, one random row each, until the block ends (bounded)."""
    stop = threading.Event()
    counts: dict[str, int] = {}
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = np.random.default_rng(seed)
        deadline = time.monotonic() + seconds
        with httpx.Client(base_url=url, timeout=10) as http:
            while not stop.is_set() and time.monotonic() < deadline:
                r = http.post("/v2/models/clf/infer", json=v2_row(rows[rng.integers(len(rows))]))
                key = f"{r.headers.get('x-model-version')}:{r.status_code}"
                with lock:
                    counts[key] = counts.get(key, 0) + 1

    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    try:
        yield counts
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=15)
