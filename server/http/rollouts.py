"""The rollout admin API: status, promote (``?full=1``), pause, resume, abort, retry, and config reload.

Every endpoint requires the admin bearer token (``require_admin``: 403 with none configured, 401 for a
missing or wrong one). The CLI (``sluice rollout ...``) is a thin client of these routes.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sluice.converters.artifact.errors import NotFoundError
from sluice.server.http.routes import _gateway, json_response, require_admin

ACTIONS = ("promote", "pause", "resume", "abort", "retry")


async def rollout_status(request: Request) -> Response:
    require_admin(request)
    return json_response(_gateway(request).traffic.status(request.path_params.get("model")))


async def rollout_action(request: Request) -> Response:
    require_admin(request)
    action = request.path_params["action"]
    if action not in ACTIONS:
        raise NotFoundError(f"no rollout action '{action}' (known: {', '.join(ACTIONS)})")
    full = request.query_params.get("full", "").lower() in ("1", "true", "yes")
    traffic = _gateway(request).traffic
    body = traffic.act(request.path_params["model"], action, full=full)
    return json_response(body)


async def rollout_reload(request: Request) -> Response:
    require_admin(request)
    traffic = _gateway(request).traffic
    traffic.reload()
    traffic.tick()
    return json_response(traffic.status())


ROLLOUT_ROUTES = [
    Route("/v2/rollouts", rollout_status),
    Route("/v2/rollouts/reload", rollout_reload, methods=["POST"]),
    Route("/v2/rollouts/{model}", rollout_status),
    Route("/v2/rollouts/{model}/{action:str}", rollout_action, methods=["POST"]),
]
