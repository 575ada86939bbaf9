"""The rollout admin API: status, promote (``?full=1``), pause, resume, abort, retry, and config reload.

Every endpoint requires the admin bearer token (``Endpoints.require_admin``: 403 with none configured,
401 for a missing or wrong one). The CLI (``sluice rollout ...``) is a thin client of these routes.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from sluice.converters.artifact.errors import NotFoundError
from sluice.server.http.routes import json_response
from sluice.server.rollouts.manager import RolloutManager

ACTIONS = ("promote", "pause", "resume", "abort", "retry")


class RolloutEndpoints:
    """Admin routes over one ``RolloutManager``."""

    def __init__(self, rollouts: RolloutManager, require_admin: Callable[[Request], None]) -> None:
        self.rollouts = rollouts
        self.require_admin = require_admin

    async def status(self, request: Request) -> Response:
        self.require_admin(request)
        return json_response(self.rollouts.status(request.path_params.get("model")))

    async def action(self, request: Request) -> Response:
        self.require_admin(request)
        action = request.path_params["action"]
        if action not in ACTIONS:
            raise NotFoundError(f"no rollout action '{action}' (known: {', '.join(ACTIONS)})")
        full = request.query_params.get("full", "").lower() in ("1", "true", "yes")
        return json_response(self.rollouts.act(request.path_params["model"], action, full=full))

    async def reload(self, request: Request) -> Response:
        self.require_admin(request)
        self.rollouts.reload()
        self.rollouts.tick()
        return json_response(self.rollouts.status())

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v2/rollouts", self.status),
            Route("/v2/rollouts/reload", self.reload, methods=["POST"]),
            Route("/v2/rollouts/{model}", self.status),
            Route("/v2/rollouts/{model}/{action:str}", self.action, methods=["POST"]),
        ]
