"""HTTP endpoints other than inference: health, metadata, config, repository, admin and ``/metrics``.

Inference itself is raw ASGI in ``sluice.server.http.inference``, in front of these Starlette routes. The
handlers are methods of ``Endpoints``, which gets everything it reads through its constructor. Every failure
is a ``SluiceError``; ``sluice.server.http.errors`` renders it.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from sluice.converters.artifact.datatypes import triton_type
from sluice.converters.artifact.errors import ForbiddenError, NotFoundError, SluiceError, UnauthorizedError
from sluice.converters.artifact.manifest import TensorSpec
from sluice.monitoring.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from sluice.monitoring.metrics import Metrics
from sluice.monitoring.monitor import Monitor
from sluice.server import __version__
from sluice.server.http.inference import path_version
from sluice.server.registry import ModelRegistry, ModelVersion
from sluice.server.routing import Target
from sluice.server.service import InferenceService
from sluice.server.settings import Settings

EXTENSIONS = ["binary_tensor_data", "model_repository"]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers=headers, media_type="application/json")


def target_of(request: Request) -> Target:
    """The model and the version or label a path names."""
    params = request.path_params
    model = params["model"]
    version = params.get("version")
    return Target(model, path_version(model, version) if version is not None else None, params.get("label"))


def tensor_json(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}


class Endpoints:
    """The Starlette side of the gateway: each handler reads what it needs from the constructor's objects."""

    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        service: InferenceService,
        metrics: Metrics,
        monitor: Monitor | None,
        is_ready: Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.service = service
        self.metrics = metrics
        self.monitor = monitor
        self.is_ready = is_ready

    def require_admin(self, request: Request) -> None:
        token = self.settings.admin_token
        if token is None:
            raise ForbiddenError("the admin API is off: set SLUICE_ADMIN_TOKEN to enable it")
        sent = request.headers.get("authorization", "")
        scheme, _, credential = sent.partition(" ")
        expected = token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(credential.strip().encode(), expected):
            raise UnauthorizedError("missing or wrong bearer token for the admin API")

    def _version(self, request: Request) -> ModelVersion:
        return self.service.version_for(target_of(request))

    # ----- health and metadata ------------------------------------------------------------------

    async def live(self, request: Request) -> Response:
        return json_response({"live": True})

    async def ready(self, request: Request) -> Response:
        is_ready = self.is_ready()
        return json_response({"ready": is_ready}, 200 if is_ready else 503)

    async def server_metadata(self, request: Request) -> Response:
        return json_response({"name": "sluice", "version": __version__, "extensions": EXTENSIONS})

    async def model_metadata(self, request: Request) -> Response:
        mv = self._version(request)
        versions = (
            [str(mv.version)]
            if "version" in request.path_params
            else [str(v.version) for v in self.registry.versions(mv.model)]
        )
        body: dict[str, Any] = {
            "name": mv.model,
            "versions": versions,
            "platform": mv.manifest.platform,
            "inputs": [tensor_json(t) for t in mv.inputs],
            "outputs": [tensor_json(t) for t in mv.outputs],
        }
        return json_response(body)

    async def model_ready(self, request: Request) -> Response:
        try:
            mv = self._version(request)
        except NotFoundError:
            raise
        except SluiceError:
            return json_response({"name": request.path_params["model"], "ready": False}, 503)
        return json_response({"name": mv.model, "ready": True})

    async def model_config(self, request: Request) -> Response:
        mv = self._version(request)
        b = mv.batching
        batched = all(t.shape[:1] == (-1,) for t in mv.inputs)
        max_batch = b.max_batch_size if batched else 0

        def dims(spec: TensorSpec) -> list[int]:
            return list(spec.shape[1:] if max_batch else spec.shape)

        def tensors(specs: list[TensorSpec]) -> list[dict[str, Any]]:
            return [{"name": t.name, "data_type": triton_type(t.datatype), "dims": dims(t)} for t in specs]

        body: dict[str, Any] = {
            "name": mv.model,
            "platform": mv.manifest.platform,
            "backend": "onnxruntime",
            "max_batch_size": max_batch,
            "input": tensors(mv.inputs),
            "output": tensors(mv.outputs),
            "version_policy": {"specific": {"versions": [mv.version]}},
            "parameters": {"sluice_execution": {"string_value": orjson.dumps(mv.execution).decode()}},
        }
        if mv.execution.get("batching"):
            body["dynamic_batching"] = {
                "preferred_batch_size": mv.execution["preferred_batch_sizes"],
                "max_queue_delay_microseconds": b.max_queue_delay_us,
            }
        return json_response(body)

    async def model_monitoring(self, request: Request) -> Response:
        """What the monitor sees of a version: per feature, prediction, latency, errors, incidents.

        It shows statistics of the training data, so it follows ``monitoring_access``.
        """
        access = self.settings.monitoring_access
        if access == "admin" or (access == "auto" and self.settings.admin_token is not None):
            self.require_admin(request)
        mv = self._version(request)
        if self.monitor is None:
            return json_response({"model": mv.model, "version": str(mv.version), "watched": False})
        # A snapshot waits for the chunk being fed (a lock): off the event loop.
        body = await asyncio.to_thread(self.monitor.snapshot, mv.model, mv.version)
        return json_response(body)

    # ----- repository, admin and metrics --------------------------------------------------------

    async def repository_index(self, request: Request) -> Response:
        return json_response(self.registry.index())

    async def repository_load(self, request: Request) -> Response:
        self.require_admin(request)
        await self.registry.load_model(request.path_params["model"])
        return json_response({})

    async def repository_unload(self, request: Request) -> Response:
        self.require_admin(request)
        await self.registry.unload_model(request.path_params["model"])
        return json_response({})

    async def metrics_text(self, request: Request) -> Response:
        return Response(self.metrics.exposition(), media_type=METRICS_CONTENT_TYPE)

    def routes(self) -> list[BaseRoute]:
        """Every route but inference (v2 .../infer, v1 ...:predict: ``sluice.server.http.inference``)."""
        routes: list[BaseRoute] = [
            Route("/v2/health/live", self.live),
            Route("/v2/health/ready", self.ready),
            Route("/v2", self.server_metadata),
            Route("/v2/repository/index", self.repository_index, methods=["POST"]),
            Route("/v2/repository/models/{model}/load", self.repository_load, methods=["POST"]),
            Route("/v2/repository/models/{model}/unload", self.repository_unload, methods=["POST"]),
            Route("/metrics", self.metrics_text),
        ]
        for base in (
            "/v2/models/{model}",
            "/v2/models/{model}/versions/{version}",
            "/v2/models/{model}/labels/{label}",
        ):
            routes += [
                Route(base, self.model_metadata),
                Route(base + "/ready", self.model_ready),
                Route(base + "/config", self.model_config),
            ]
        routes += [
            Route("/v2/models/{model}/monitoring", self.model_monitoring),
            Route("/v2/models/{model}/versions/{version}/monitoring", self.model_monitoring),
        ]
        return routes
