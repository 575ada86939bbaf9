"""The one place an error becomes an HTTP answer: ``{"error": ..., "code": ..., "details": ...}``.

Both front ends use it: the raw inference endpoint (``render``) and the Starlette app (``HANDLERS``, looked
up by exception class as Starlette does), so an error reads the same whichever route raised it.
"""

from __future__ import annotations

import logging

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from sluice.converters.artifact.errors import InternalError, OverloadedError, SluiceError

log = logging.getLogger("sluice.http")

JSON = b"application/json"
Headers = list[tuple[bytes, bytes]]


def render(exc: SluiceError) -> tuple[int, Headers, bytes]:
    """Status, raw headers and body of an error."""
    headers = [(b"content-type", JSON)]
    if isinstance(exc, OverloadedError):
        headers.append((b"retry-after", str(exc.retry_after_s).encode()))
    return exc.status, headers, orjson.dumps(exc.to_json())


def _response(exc: SluiceError) -> Response:
    status, headers, body = render(exc)
    return Response(body, status, headers={k.decode(): v.decode() for k, v in headers})


async def _sluice_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SluiceError)
    if exc.status == 500:
        log.error("%s %s: %s", request.method, request.url.path, exc.message, exc_info=exc.__cause__)
    return _response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    body = {"error": exc.detail, "code": "not_found" if exc.status_code == 404 else "http"}
    return Response(orjson.dumps(body), exc.status_code, headers=exc.headers, media_type="application/json")


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return _response(InternalError("internal server error"))


#: Starlette's ``exception_handlers``.
HANDLERS = {SluiceError: _sluice_error, HTTPException: _http_error, Exception: _unexpected}
