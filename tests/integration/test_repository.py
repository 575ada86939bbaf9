"""The repository changes while the gateway serves: versions appear, break and disappear."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sluice.converters import convert
from tests.integration.support import metric, wait_for

pytestmark = pytest.mark.integration

ADMIN = {"authorization": "Bearer t0ken"}
ROW = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [0.5, -1, 2, 0]}]}


def states(server: Any) -> dict[tuple[str, str], dict[str, str]]:
    r = server.client.post("/v2/repository/index")
    assert r.status_code == 200
    return {(m["name"], m["version"]): m for m in r.json()}


def drop_in(repository: Path, model: str, version: int, onnx: bytes) -> None:
    """Write a version as a converter would: into a dot-directory, then rename."""
    tmp = repository / model / f".tmp-{version}"
    tmp.mkdir()
    (tmp / "model.onnx").write_bytes(onnx)
    tmp.rename(repository / model / str(version))


def test_hot_added_corrupt_and_removed_versions(
    make_server: Any, repository: Path, fitted: dict[str, Any]
) -> None:
    server = make_server(admin_token="t0ken")
    model, sample = fitted["clf"]
    result = convert(model, sample, repository=repository, name="clf")
    assert result.version == 2
    drop_in(repository, "clf", 3, b"this is not an onnx graph")

    assert server.client.post("/v2/repository/models/clf/load", headers=ADMIN).status_code == 200
    index = states(server)
    assert index[("clf", "2")]["state"] == "READY"
    assert index[("clf", "3")]["state"] == "UNAVAILABLE"
    assert "not a loadable ONNX graph" in index[("clf", "3")]["reason"]

    # The broken version never serves; the others do, and the unversioned route goes to the newest ready one.
    r = server.client.post("/v2/models/clf/versions/3/infer", json=ROW)
    assert r.status_code == 503 and "UNAVAILABLE" in r.json()["error"]
    assert server.client.post("/v2/models/clf/infer", json=ROW).headers["x-model-version"] == "2"
    assert server.client.post("/v2/models/clf/versions/1/infer", json=ROW).status_code == 200
    assert server.client.get("/v2/models/clf").json()["versions"] == ["1", "2"]

    shutil.rmtree(repository / "clf" / "2")
    shutil.rmtree(repository / "clf" / "3")
    assert server.client.post("/v2/repository/models/clf/load", headers=ADMIN).status_code == 200
    assert set(states(server)) == {("clf", "1"), ("multi", "1"), ("reg", "1"), ("slow", "1")}
    assert server.client.post("/v2/models/clf/versions/2/infer", json=ROW).status_code == 404
    assert server.client.post("/v2/models/clf/infer", json=ROW).headers["x-model-version"] == "1"


def test_a_changed_file_that_fails_keeps_the_old_load(make_server: Any, repository: Path) -> None:
    server = make_server(admin_token="t0ken")
    before = server.client.post("/v2/models/reg/infer", json=ROW).json()
    (repository / "reg" / "1" / "model.onnx").write_bytes(b"\x00" * 64)
    server.client.post("/v2/repository/models/reg/load", headers=ADMIN)
    slot = states(server)[("reg", "1")]
    assert slot["state"] == "READY" and "reload failed" in slot["reason"]
    assert server.client.post("/v2/models/reg/infer", json=ROW).json() == before


def test_a_changed_file_that_loads_replaces_the_old_load_and_keeps_its_series(
    make_server: Any, repository: Path
) -> None:
    server = make_server(admin_token="t0ken")
    assert server.client.post("/v2/models/reg/infer", json=ROW).status_code == 200
    onnx = repository / "reg" / "1" / "model.onnx"
    stat = onnx.stat()
    os.utime(onnx, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # a new copy of the file
    assert server.client.post("/v2/repository/models/reg/load", headers=ADMIN).status_code == 200
    assert states(server)[("reg", "1")] == {"name": "reg", "version": "1", "state": "READY", "reason": ""}
    assert server.client.post("/v2/models/reg/infer", json=ROW).status_code == 200
    # The old load retired after the new one took over: the version is still ready and still watched.
    assert metric(server, 'sluice_model_version_ready{model="reg",version="1"}') == 1
    # With an admin token set, the monitoring endpoint (training-data statistics) asks for it too.
    monitoring = server.client.get("/v2/models/reg/versions/1/monitoring", headers=ADMIN)
    assert monitoring.json()["watched"] is True


def test_a_bad_config_yaml_keeps_serving(make_server: Any, repository: Path) -> None:
    (repository / "clf" / "config.yaml").write_text("version_policy: [oops\n")
    server = make_server()
    assert server.client.post("/v2/models/clf/infer", json=ROW).status_code == 200


def test_version_policy_and_labels(make_server: Any, repository: Path, fitted: dict[str, Any]) -> None:
    model, sample = fitted["clf"]
    convert(model, sample, repository=repository, name="clf")
    convert(model, sample, repository=repository, name="clf")
    (repository / "clf" / "config.yaml").write_text(
        "version_policy: {latest: 2}\nlabels: {stable: 2, canary: 3}\n"
    )
    server = make_server()
    assert server.client.get("/v2/models/clf").json()["versions"] == ["2", "3"]
    assert server.client.post("/v2/models/clf/infer", json=ROW).headers["x-model-version"] == "2"
    r = server.client.post("/v2/models/clf/labels/canary/infer", json=ROW)
    assert r.headers["x-model-version"] == "3"
    assert server.client.post("/v2/models/clf/versions/1/infer", json=ROW).status_code == 404


def test_poller_picks_up_a_new_version(make_server: Any, repository: Path, fitted: dict[str, Any]) -> None:
    server = make_server(poll_interval_s=0.05)
    model, sample = fitted["multi"]
    convert(model, sample, repository=repository, name="multi")
    wait_for(lambda: states(server).get(("multi", "2"), {}).get("state") == "READY", "version 2 to load", 20)
    r = server.client.post("/v2/models/multi/infer", json=ROW)
    assert r.status_code == 200 and r.headers["x-model-version"] == "2"
    expected = model.predict(np.array([[0.5, -1, 2, 0]], np.float32)).tolist()
    assert next(o for o in r.json()["outputs"] if o["name"] == "label")["data"] == expected
