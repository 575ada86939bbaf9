"""Routing, shadows, hot reload and the admin API through a real gateway."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import onnx
import pytest

from tests.conftest import slow_onnx
from tests.integration.rollout_helpers import AUTH, TOKEN, copy_version, v2_row, wait_for
from tests.integration.support import metric

pytestmark = pytest.mark.integration

ROUTING = """
models:
  clf:
    labels: {baseline: 1}
    traffic:
      weights: {1: 50, 2: 50}
      override: {header: x-model-version, allow: [1, 2]}
      sticky: {key: "query:user", salt: test}
"""


@pytest.fixture
def routed(make_server: Any, repository: Path, tmp_path: Path) -> Any:
    copy_version(repository, "clf", 1, 2)
    rollouts = tmp_path / "rollouts.yaml"
    rollouts.write_text(ROUTING)
    server = make_server(rollout_file=rollouts, state_dir=tmp_path / "state", admin_token=TOKEN)
    server.rollouts = rollouts
    return server


def test_every_response_says_where_it_went_and_why(routed: Any, fitted: dict[str, Any]) -> None:
    body = v2_row(fitted["clf"][1][0])
    c = routed.client

    def where(path: str, **kw: Any) -> tuple[str, str]:
        r = c.post(path, json=body, **kw)
        assert r.status_code == 200, r.text
        return r.headers["x-model-version"], r.headers["x-route-reason"]

    assert where("/v2/models/clf/versions/2/infer") == ("2", "explicit")
    assert where("/v2/models/clf/labels/baseline/infer") == ("1", "label")
    assert where("/v2/models/clf/infer", headers={"x-model-version": "2"}) == ("2", "override")
    seen = {where("/v2/models/clf/infer") for _ in range(40)}
    assert seen == {("1", "split"), ("2", "split")}  # 40 fair draws missing one side: p = 2e-12
    sticky = {where("/v2/models/clf/infer?user=alice") for _ in range(10)}
    assert len(sticky) == 1 and next(iter(sticky))[1] == "sticky"
    r = c.post("/v2/models/clf/infer", json=body, headers={"x-model-version": "3"})
    assert r.status_code == 400 and "not an allowed version" in r.json()["error"]
    r = c.post("/v1/models/clf:predict", json={"instances": [[0, 0, 0, 0]]}, headers={"x-model-version": "1"})
    assert (r.headers["x-model-version"], r.headers["x-route-reason"]) == ("1", "override")
    assert (
        metric(routed, 'sluice_requests_total{model="clf",outcome="ok",reason="override",version="2"}') == 1
    )
    assert (
        metric(routed, 'sluice_requests_total{model="clf",outcome="ok",reason="explicit",version="2"}') == 1
    )


def test_a_bad_file_is_rejected_and_the_old_routing_stays(routed: Any, fitted: dict[str, Any]) -> None:
    body = v2_row(fitted["clf"][1][0])
    routed.rollouts.write_text(ROUTING.replace("{1: 50, 2: 50}", "{1: 50, 2: 40}"))
    wait_for(lambda: metric(routed, "sluice_rollout_config_rejected_total") == 1, "the poller to reject it")
    r = routed.client.post("/v2/rollouts/reload", headers=AUTH)
    assert r.status_code == 400 and "weights sum to 90, not 100" in r.json()["error"]
    assert metric(routed, "sluice_rollout_config_rejected_total") == 2
    versions = {
        routed.client.post("/v2/models/clf/infer", json=body).headers["x-model-version"] for _ in range(40)
    }
    assert versions == {"1", "2"}
    # A good file applies on the next poll.
    routed.rollouts.write_text(ROUTING.replace("{1: 50, 2: 50}", "{1: 0, 2: 100}"))
    wait_for(
        lambda: routed.client.post("/v2/models/clf/infer", json=body).headers["x-route-reason"] == "default",
        "the new file",
    )
    assert routed.client.post("/v2/models/clf/infer", json=body).headers["x-model-version"] == "2"


def test_the_admin_api_refuses_a_missing_or_wrong_token(routed: Any, make_server: Any) -> None:
    c = routed.client
    assert c.get("/v2/rollouts").status_code == 401
    assert c.get("/v2/rollouts", headers={"authorization": "Bearer nope"}).status_code == 401
    assert c.post("/v2/rollouts/clf/promote", headers={"authorization": f"Basic {TOKEN}"}).status_code == 401
    assert c.post("/v2/rollouts/reload").status_code == 401
    ok = c.get("/v2/rollouts", headers=AUTH)
    assert ok.status_code == 200 and ok.json()["models"]["clf"]["weights"] == {"1": 50.0, "2": 50.0}
    assert c.post("/v2/rollouts/clf/promote", headers=AUTH).status_code == 404  # no rollout for clf
    off = make_server()  # no token configured: the admin API is off, never open
    assert off.client.get("/v2/rollouts").status_code == 403


def slow_variant(directory: Path, *, factor: float = 1.0, rename_input: str | None = None) -> None:
    """The conftest ``slow`` graph, ``factor`` times slower per unit, or expecting another input name."""
    model = onnx.load_from_string(slow_onnx())
    for node in model.graph.node:
        if node.output[0] == "k":
            node.attribute[0].t.float_data[0] = 1000.0 * factor
        if rename_input:
            node.input[:] = [rename_input if i == "x" else i for i in node.input]
    if rename_input:
        model.graph.input[0].name = rename_input
    directory.mkdir(parents=True)
    (directory / "model.onnx").write_bytes(model.SerializeToString())


def test_a_failing_slow_or_overloaded_shadow_never_touches_the_primary(
    make_server: Any, repository: Path, tmp_path: Path
) -> None:
    slow = repository / "slow"
    slow_variant(slow / "2", factor=40)  # one unit: about 100 ms, past the 30 ms timeout
    slow_variant(slow / "3", rename_input="z")  # every run fails inside onnxruntime
    copy_version(repository, "slow", 1, 4)  # the same graph: agrees with the primary
    rollouts = tmp_path / "rollouts.yaml"
    rollouts.write_text("models: {slow: {traffic: {weights: {1: 100}}}}\n")
    server = make_server(rollout_file=rollouts, state_dir=tmp_path / "state", admin_token=TOKEN)
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 0.5, 0.25, 0]}]}

    def primary_latencies(n: int = 30) -> tuple[list[float], set[bytes]]:
        took, bodies = [], set()
        for _ in range(n):
            started = time.perf_counter()
            r = server.client.post("/v2/models/slow/infer", json=body)
            took.append(time.perf_counter() - started)
            assert r.status_code == 200 and r.headers["x-model-version"] == "1", r.text
            bodies.add(r.content)
        return took, bodies

    alone, alone_bodies = primary_latencies()
    rollouts.write_text(
        "models:\n  slow:\n    traffic: {weights: {1: 100}}\n    shadows:\n"
        "      - {version: 2, percent: 100, max_in_flight: 1, timeout_ms: 30}\n"
        "      - {version: 3, percent: 100, timeout_ms: 1000}\n"
        "      - {version: 4, percent: 100, compare: {mode: allclose, atol: 0.0}}\n"
    )
    assert server.client.post("/v2/rollouts/reload", headers=AUTH).status_code == 200
    shadowed, shadowed_bodies = primary_latencies()
    assert shadowed_bodies == alone_bodies  # same status and the same bytes
    # Never awaited: a 100 ms shadow on every request would add at least 30 ms to each one.
    assert statistics.median(shadowed) <= 2 * statistics.median(alone) + 0.05, (alone, shadowed)

    def shadow(version: int, outcome: str) -> float:
        return metric(
            server, f'sluice_shadow_requests_total{{model="slow",outcome="{outcome}",version="{version}"}}'
        )

    def total(version: int) -> float:
        return sum(shadow(version, o) for o in ("ok", "error", "timeout", "dropped"))

    # Every mirrored copy ends one way or another (drops are legitimate on a busy machine).
    wait_for(lambda: all(total(v) == 30 for v in (2, 3, 4)), "every shadow to finish")
    assert shadow(2, "timeout") >= 1 and shadow(2, "dropped") >= 1 and shadow(2, "ok") == 0
    assert shadow(3, "error") >= 1 and shadow(3, "ok") == 0
    compared = shadow(4, "ok")
    assert compared >= 1
    agree = 'sluice_shadow_comparisons_total{model="slow",result="agree",version="4"}'
    wait_for(lambda: metric(server, agree) == compared, "the comparisons")
    assert (
        metric(server, 'sluice_shadow_abs_difference_bucket{le="1e-07",model="slow",version="4"}') == compared
    )
