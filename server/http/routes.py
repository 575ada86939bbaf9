"""HTTP endpoints other than inference: health, metadata, config, repository, admin and ``/metrics``.

Inference itself is raw ASGI in ``sluice.server.http.inference``, in front of these Starlette routes. Every failure is
a ``SluiceError``; the app's handler renders it.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sluice.monitoring.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from sluice.server import __version__
from sluice.converters.artifact.datatypes import triton_type
from sluice.converters.artifact.errors import (
    ForbiddenError,
    NotFoundError,
    SluiceError,
    UnauthorizedError,
)

if TYPE_CHECKING:
    from sluice.server.app import Gateway
    from sluice.server.registry import ModelVersion

EXTENSIONS = ["binary_tensor_data", "model_repository"]

# curl -d sends form-urlencoded and many clients send text/plain: both carry our JSON in practice.
_READABLE_TYPES = frozenset(
    {"", "application/json", "application/octet-stream", "application/x-www-form-urlencoded", "text/plain"}
)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers=headers, media_type="application/json")


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


# ----- health and metadata ----------------------------------------------------------------------


async def live(request: Request) -> Response:
    return json_response({"live": True})


async def ready(request: Request) -> Response:
    is_ready = _gateway(request).ready
    return json_response({"ready": is_ready}, 200 if is_ready else 503)


async def server_metadata(request: Request) -> Response:
    return json_response({"name": "sluice", "version": __version__, "extensions": EXTENSIONS})


def _resolve(request: Request, *, route: bool = False) -> tuple[ModelVersion, str]:
    """The version a request goes to and why; only inference (``route``) goes through the router."""
    params = request.path_params
    return _gateway(request).service.resolve(
        params["model"],
        params.get("version"),
        label=params.get("label"),
        headers=request.headers if route else None,
        query=request.query_params if route else None,
    )


def _tensor(spec: Any) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}


async def model_metadata(request: Request) -> Response:
    gateway = _gateway(request)
    mv, _ = _resolve(request)
    versions = (
        [str(mv.version)]
        if "version" in request.path_params
        else [str(v.version) for v in gateway.registry.versions(mv.model)]
    )
    body: dict[str, Any] = {
        "name": mv.model,
        "versions": versions,
        "platform": mv.manifest.platform,
        "inputs": [_tensor(t) for t in mv.inputs],
        "outputs": [_tensor(t) for t in mv.outputs],
    }
    return json_response(body)


async def model_ready(request: Request) -> Response:
    try:
        mv, _ = _resolve(request)
    except NotFoundError:
        raise
    except SluiceError:
        return json_response({"name": request.path_params["model"], "ready": False}, 503)
    return json_response({"name": mv.model, "ready": True})


async def model_config(request: Request) -> Response:
    mv, _ = _resolve(request)
    b = mv.batching
    batched = all(t.shape[:1] == (-1,) for t in mv.inputs)
    max_batch = b.max_batch_size if batched else 0

    def dims(spec: Any) -> list[int]:
        return list(spec.shape[1:] if max_batch else spec.shape)

    body: dict[str, Any] = {
        "name": mv.model,
        "platform": mv.manifest.platform,
        "backend": "onnxruntime",
        "max_batch_size": max_batch,
        "input": [{"name": t.name, "data_type": triton_type(t.datatype), "dims": dims(t)} for t in mv.inputs],
        "output": [
            {"name": t.name, "data_type": triton_type(t.datatype), "dims": dims(t)} for t in mv.outputs
        ],
        "version_policy": {"specific": {"versions": [mv.version]}},
        "parameters": {"sluice_execution": {"string_value": orjson.dumps(mv.execution).decode()}},
    }
    if mv.execution.get("batching"):
        body["dynamic_batching"] = {
            "preferred_batch_size": mv.execution["preferred_batch_sizes"],
            "max_queue_delay_microseconds": b.max_queue_delay_us,
        }
    return json_response(body)


async def repository_index(request: Request) -> Response:
    return json_response(_gateway(request).registry.index())


# ----- admin and metrics ------------------------------------------------------------------------


def require_admin(request: Request) -> None:
    token = _gateway(request).settings.admin_token
    if token is None:
        raise ForbiddenError("the admin API is off: set SLUICE_ADMIN_TOKEN to enable it")
    sent = request.headers.get("authorization", "")
    scheme, _, credential = sent.partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(credential.strip().encode(), expected):
        raise UnauthorizedError("missing or wrong bearer token for the admin API")


async def repository_load(request: Request) -> Response:
    require_admin(request)
    await _gateway(request).registry.load_model(request.path_params["model"])
    return json_response({})


async def repository_unload(request: Request) -> Response:
    require_admin(request)
    await _gateway(request).registry.unload_model(request.path_params["model"])
    return json_response({})


async def metrics(request: Request) -> Response:
    return Response(_gateway(request).metrics.exposition(), media_type=METRICS_CONTENT_TYPE)


_MODEL = "/v2/models/{model}"
_VERSION = "/v2/models/{model}/versions/{version}"
_LABEL = "/v2/models/{model}/labels/{label}"

# Inference (v2 .../infer, v1 ...:predict) is served by server.endpoint in front of these routes.
ROUTES = [
    Route("/v2/health/live", live),
    Route("/v2/health/ready", ready),
    Route("/v2", server_metadata),
    Route("/v2/repository/index", repository_index, methods=["POST"]),
    Route("/v2/repository/models/{model}/load", repository_load, methods=["POST"]),
    Route("/v2/repository/models/{model}/unload", repository_unload, methods=["POST"]),
    Route("/metrics", metrics),
]
for _base in (_MODEL, _VERSION, _LABEL):
    ROUTES += [
        Route(_base, model_metadata),
        Route(_base + "/ready", model_ready),
        Route(_base + "/config", model_config),
    ]


async def model_monitoring(request: Request) -> Response:
    """What the monitor sees of a version: per feature, prediction, latency, errors, incidents."""
    gateway = _gateway(request)
    mv, _ = _resolve(request)
    if gateway.monitor is None:
        return json_response({"model": mv.model, "version": str(mv.version), "watched": False})
    # A snapshot waits for the chunk being fed (a lock): off the event loop.
    body = await asyncio.to_thread(gateway.monitor.snapshot, mv.model, mv.version)
    return json_response(body)


ROUTES += [Route(_MODEL + "/monitoring", model_monitoring), Route(_VERSION + "/monitoring", model_monitoring)]
