"""The inference endpoints as raw ASGI, in front of the Starlette app that serves everything else.

Inference carries nearly all of a gateway's traffic, and under load Starlette's layers (router matching,
two exception middlewares, Request/Response objects, header and query wrappers) cost more than the
codecs and the model together for a small tabular model. So ``InferenceEndpoint`` recognises

    POST /v2/models/{m}[/versions/{v} | /labels/{l}]/infer
    POST /v1/models/{m}[/versions/{v} | /labels/{l}]:predict

by splitting the path, and serves them with plain ASGI messages; every other request (and the lifespan)
goes to the wrapped app. Errors are rendered exactly as the app's handler renders them.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import time
import zlib
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any

import orjson
from starlette.datastructures import Headers, QueryParams
from starlette.types import ASGIApp, Receive, Scope, Send

from sluice.server.codecs.v2 import InferRequest, decode_v2, decompress, encode_v2
from sluice.converters.artifact.errors import (
    BadRequestError,
    BodyTooLargeError,
    ClientDisconnectedError,
    OverloadedError,
    SluiceError,
    UnsupportedMediaError,
)
from sluice.server.codecs.v1 import decode_v1, encode_v1

if TYPE_CHECKING:
    from sluice.server.app import Gateway
    from sluice.server.registry import ModelVersion

log = logging.getLogger("sluice.endpoint")

# curl -d sends form-urlencoded and many clients send text/plain: both carry our JSON in practice.
READABLE_TYPES = frozenset(
    {"", "application/json", "application/octet-stream", "application/x-www-form-urlencoded", "text/plain"}
)
_JSON = b"application/json"


def parse_target(path: str) -> tuple[str, str, str | None, str | None] | None:
    """``(protocol, model, version, label)`` for an inference path, else None."""
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        protocol, parts = "v2", path[11:-6].split("/")
    elif path.startswith("/v1/models/") and path.endswith(":predict"):
        protocol, parts = "v1", path[11:-8].split("/")
    else:
        return None
    if len(parts) == 1 and parts[0]:
        return protocol, parts[0], None, None
    if len(parts) == 3 and parts[0] and parts[2]:
        if parts[1] == "versions":
            return protocol, parts[0], parts[2], None
        if parts[1] == "labels":
            return protocol, parts[0], None, parts[2]
    return None


class _LazyQuery(Mapping[str, str]):
    """The query string, parsed only if the router asks for a sticky key from it."""

    __slots__ = ("_parsed", "_raw")

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._parsed: QueryParams | None = None

    def _params(self) -> QueryParams:
        if self._parsed is None:
            self._parsed = QueryParams(self._raw)
        return self._parsed

    def __getitem__(self, key: str) -> str:
        return self._params()[key]

    def __iter__(self) -> Any:
        return iter(self._params())

    def __len__(self) -> int:
        return len(self._params())


class _LazyHeaders(Mapping[str, str]):
    """Starlette's case-insensitive headers, built only if the router reads one (an override, a key)."""

    __slots__ = ("_headers", "_scope")

    def __init__(self, scope: Scope) -> None:
        self._scope = scope
        self._headers: Headers | None = None

    def _get(self) -> Headers:
        if self._headers is None:
            self._headers = Headers(scope=self._scope)
        return self._headers

    def __getitem__(self, key: str) -> str:
        return self._get()[key]

    def __iter__(self) -> Any:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


async def read_body(headers: Mapping[bytes, bytes], receive: Receive, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes before and while reading it.

    ``headers`` are the ASGI scope's raw headers as a dict (names are lower-case in ASGI).
    """
    declared = headers.get(b"content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequestError(f"invalid Content-Length header {declared.decode('latin-1')!r}")
        if int(declared) > limit:
            raise BodyTooLargeError(f"request body of {int(declared)} bytes is over the limit of {limit}")
    content_type = headers.get(b"content-type")
    if content_type is not None and content_type != _JSON:
        media_type = content_type.decode("latin-1").split(";", 1)[0].strip().lower()
        if media_type not in READABLE_TYPES:
            raise UnsupportedMediaError(
                f"content type {media_type!r} is not readable here: send application/json, or "
                "application/octet-stream with Inference-Header-Content-Length for binary tensors"
            )
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnectedError("the client disconnected while sending the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def header_length(headers: Mapping[bytes, bytes]) -> int | None:
    raw = headers.get(b"inference-header-content-length")
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise BadRequestError(
            f"Inference-Header-Content-Length {raw.decode('latin-1')!r} is not an integer"
        ) from None


#: A request still unanswered after this long starts watching for its client's disconnect. Most
#: answers come sooner, even at saturation (p50 ~25 ms on the P1 load), and a watcher task per request
#: cost more than the model (see run_until_disconnect). A queue is left at most this much later.
WATCH_AFTER_S = 0.05


class _DisconnectWatch:
    """Cancels ``task`` when the client disconnects; the watching starts only after ``WATCH_AFTER_S``."""

    __slots__ = ("_receive", "_task", "_timer", "_watcher", "gone")

    def __init__(self, receive: Receive, task: asyncio.Task[Any]) -> None:
        self._receive = receive
        self._task = task
        self._watcher: asyncio.Task[None] | None = None
        self.gone = False
        self._timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, self._start)

    def _start(self) -> None:
        self._watcher = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        # Once the body is read, the next ASGI message can only be http.disconnect.
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.gone = True
            self._task.cancel()

    def close(self) -> None:
        self._timer.cancel()
        if self._watcher is not None:
            self._watcher.cancel()


async def run_until_disconnect(receive: Receive, work: Awaitable[Any]) -> Any:
    """Await ``work``, cancelling it if the client disconnects first (a queued request leaves its queue).

    A watcher task per request (create, one step, cancel) cost ~40 us on the P1 load, more than the
    model; so the watch starts on a timer, only for a request that is still waiting after
    ``WATCH_AFTER_S``, which is when leaving a queue early saves anything.
    """
    task = asyncio.current_task()
    assert task is not None
    watch = _DisconnectWatch(receive, task)
    try:
        return await work
    except asyncio.CancelledError:
        if not watch.gone:
            raise
        task.uncancel()
        raise ClientDisconnectedError("the client disconnected before the answer was ready") from None
    finally:
        watch.close()


#: zlib level for responses: most of the size win on JSON numbers for a fraction of level 6's CPU.
COMPRESS_LEVEL = 1


def accepted_encoding(header: bytes) -> str | None:
    """``gzip`` or ``deflate`` if the Accept-Encoding header takes one (gzip first), else None.

    >>> accepted_encoding(b"deflate, gzip;q=0.5"), accepted_encoding(b"gzip;q=0, br"), accepted_encoding(b"*")
    ('gzip', None, 'gzip')
    """
    offered = {}
    for part in header.decode("latin-1").lower().split(","):
        name, _, params = part.partition(";")
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                q = 0.0
        offered[name.strip()] = q
    for name in ("gzip", "deflate"):
        if offered.get(name, offered.get("*", 0.0)) > 0:
            return name
    return None


def compress(payload: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.compress(payload, COMPRESS_LEVEL, mtime=0)
    return zlib.compress(payload, COMPRESS_LEVEL)  # HTTP's deflate is the zlib format


def error_response(exc: SluiceError) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers and body of an error, as the Starlette app's handler renders them too."""
    headers = [(b"content-type", _JSON)]
    if isinstance(exc, OverloadedError):
        headers.append((b"retry-after", str(exc.retry_after_s).encode()))
    return exc.status, headers, orjson.dumps(exc.to_json())


class InferenceEndpoint:
    """ASGI app: inference requests served directly, everything else by ``app``."""

    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            target = parse_target(scope["path"])
            if target is not None:
                await self._infer(scope, receive, send, *target)
                return
        await self.app(scope, receive, send)

    async def _infer(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        protocol: str,
        model: str,
        version: str | None,
        label: str | None,
    ) -> None:
        gateway = self.gateway
        started = time.perf_counter()
        headers: dict[bytes, bytes] = dict(scope["headers"])
        mv: ModelVersion | None = None
        reason = "default"
        try:
            mv, reason = gateway.service.resolve(
                model,
                version,
                label=label,
                headers=_LazyHeaders(scope),
                query=_LazyQuery(scope["query_string"]),
            )
            limit = gateway.settings.max_body_bytes
            body = await read_body(headers, receive, limit)
            encoding = headers.get(b"content-encoding")
            if encoding is not None:
                body = decompress(body, encoding.decode("latin-1"), max_bytes=limit)
            decoded: InferRequest
            if protocol == "v2":
                decoded = decode_v2(
                    body,
                    header_length=header_length(headers),
                    signature=mv.inputs,
                    max_elements=gateway.settings.max_elements,
                    allow_nan=mv.allow_nan,
                    output_names=mv.output_names,
                )
            else:
                decoded = decode_v1(
                    body,
                    signature=mv.inputs,
                    max_elements=gateway.settings.max_elements,
                    allow_nan=mv.allow_nan,
                )
            outputs = await run_until_disconnect(receive, gateway.service.run(mv, decoded))
            if protocol == "v2":
                payload, content = encode_v2(
                    model_name=mv.model,
                    model_version=str(mv.version),
                    request=decoded,
                    outputs=outputs,
                    output_specs=mv.outputs,
                )
                response_headers = (
                    [(k.encode(), v.encode()) for k, v in content.items()]
                    if len(content) > 1
                    else [(b"content-type", _JSON)]
                )
            else:
                payload = encode_v1(outputs, mv.outputs)
                response_headers = [(b"content-type", _JSON)]
        except SluiceError as exc:
            gateway.account(mv, exc.status, reason, started)
            if exc.status >= 500:
                log.error("POST %s: %s", scope["path"], exc.message, exc_info=exc.__cause__)
            if isinstance(exc, ClientDisconnectedError):
                return  # nobody is there to read an answer
            status, response_headers, payload = error_response(exc)
        except Exception:
            gateway.account(mv, 500, reason, started)
            log.exception("unexpected error on POST %s", scope["path"])
            status, response_headers, payload = (
                500,
                [(b"content-type", _JSON)],
                orjson.dumps({"error": "internal server error", "code": "internal"}),
            )
        else:
            gateway.account(mv, 200, reason, started, decoded.inputs, outputs)
            status = 200
        if mv is not None:  # errors too: a failing canary names itself
            response_headers += [
                (b"x-model-version", str(mv.version).encode()),
                (b"x-route-reason", reason.encode()),
            ]
        threshold = gateway.settings.compress_responses_from_bytes
        if status == 200 and threshold is not None and len(payload) >= threshold:
            accept = headers.get(b"accept-encoding")
            chosen = accepted_encoding(accept) if accept is not None else None
            if chosen is not None:
                payload = compress(payload, chosen)
                response_headers += [(b"content-encoding", chosen.encode()), (b"vary", b"accept-encoding")]
        response_headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": payload})
