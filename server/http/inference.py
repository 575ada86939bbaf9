"""The inference endpoints as raw ASGI, in front of the Starlette app that serves everything else.

Inference carries nearly all of a gateway's traffic, and under load Starlette's layers (router matching,
two exception middlewares, Request/Response objects, header and query wrappers) cost more than the
codecs and the model together for a small tabular model. So ``InferenceEndpoint`` recognises

    POST /v2/models/{m}[/versions/{v} | /labels/{l}]/infer
    POST /v1/models/{m}[/versions/{v} | /labels/{l}]:predict

by splitting the path, and serves them with plain ASGI messages; every other request (and the lifespan)
goes to the wrapped app. It only does HTTP: what to serve and the serving itself are
``InferenceService.infer``'s; errors are rendered by ``sluice.server.http.errors``, as the app's are.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import logging
import zlib
from collections.abc import Awaitable, Mapping
from typing import Any

from starlette.datastructures import Headers, QueryParams
from starlette.types import ASGIApp, Receive, Scope, Send

from sluice.converters.artifact.errors import (
    BadRequestError,
    BodyTooLargeError,
    ClientDisconnectedError,
    UnsupportedMediaError,
    VersionNotFoundError,
)
from sluice.server.codecs import InferRequest, decode_v1, decode_v2, decompress, encode_v1, encode_v2
from sluice.server.http.decoding import OFFLOAD_BYTES, LargeDecodes
from sluice.server.http.errors import JSON, render
from sluice.server.registry import ModelVersion
from sluice.server.routing import Target, parse_version
from sluice.server.service import InferenceService
from sluice.server.settings import Settings

log = logging.getLogger("sluice.endpoint")

# curl -d sends form-urlencoded and many clients send text/plain: both carry our JSON in practice.
READABLE_TYPES = frozenset(
    {"", "application/json", "application/octet-stream", "application/x-www-form-urlencoded", "text/plain"}
)
_JSON = JSON


def parse_target(path: str) -> tuple[str, Target] | None:
    """``(protocol, target)`` for an inference path, else None (not an inference request).

    A version segment that is not a version number (``abc``, ``٣``, 5,000 digits) is a 404 here: versions
    are ints from this point on.

    >>> parse_target("/v2/models/churn/versions/2/infer")
    ('v2', Target(model='churn', version=2, label=None))
    >>> parse_target("/v1/models/churn/labels/canary:predict")
    ('v1', Target(model='churn', version=None, label='canary'))
    """
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        protocol, parts = "v2", path[11:-6].split("/")
    elif path.startswith("/v1/models/") and path.endswith(":predict"):
        protocol, parts = "v1", path[11:-8].split("/")
    else:
        return None
    if len(parts) == 1 and parts[0]:
        return protocol, Target(parts[0])
    if len(parts) == 3 and parts[0] and parts[2]:
        if parts[1] == "versions":
            return protocol, Target(parts[0], version=path_version(parts[0], parts[2]))
        if parts[1] == "labels":
            return protocol, Target(parts[0], label=parts[2])
    return None


def path_version(model: str, text: str) -> int:
    """The version number in a path, or a 404 that quotes (a bounded piece of) what was sent."""
    number = parse_version(text)
    if number is None:
        raise VersionNotFoundError(f"model '{model}' has no version {text[:40]!r}")
    return number


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


class InferenceEndpoint:
    """ASGI app: inference requests served directly, everything else by ``app``."""

    def __init__(
        self, app: ASGIApp, service: InferenceService, settings: Settings, large: LargeDecodes
    ) -> None:
        self.app = app
        self.service = service
        self.settings = settings
        self._large = large

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            try:
                found = parse_target(scope["path"])
            except VersionNotFoundError as exc:
                await _send(send, *render(exc))
                return
            if found is not None:
                await self._infer(scope, receive, send, *found)
                return
        await self.app(scope, receive, send)

    async def _infer(self, scope: Scope, receive: Receive, send: Send, protocol: str, target: Target) -> None:
        settings = self.settings
        headers: dict[bytes, bytes] = dict(scope["headers"])

        async def decode(mv: ModelVersion) -> InferRequest:
            # Binary tensors may be large; JSON (a whole body, or a binary request's header) costs about
            # ten times its size in memory while it is read, so it has its own, smaller limit.
            json_limit = min(settings.max_json_bytes, settings.max_body_bytes)
            binary = protocol == "v2" and b"inference-header-content-length" in headers
            limit = settings.max_body_bytes if binary else json_limit
            try:
                body = await read_body(headers, receive, limit)
                encoding = headers.get(b"content-encoding")
                if encoding is not None:
                    body = decompress(body, encoding.decode("latin-1"), max_bytes=limit)
            except BodyTooLargeError as exc:
                if binary:
                    raise
                raise BodyTooLargeError(
                    f"{exc.message} for JSON; send large inputs as binary tensors"
                ) from None
            declared = header_length(headers) if binary else None  # the binary request's JSON header
            json_length = declared if binary else len(body)
            if json_length is not None and json_length > json_limit:
                raise BodyTooLargeError(
                    f"the request's JSON is {json_length} bytes, over the limit of {json_limit} "
                    "(send large inputs as binary tensors)"
                )
            if protocol == "v2":
                work = functools.partial(
                    decode_v2,
                    body,
                    header_length=declared,
                    signature=mv.inputs,
                    max_elements=settings.max_elements,
                    allow_nan=mv.allow_nan,
                    output_names=mv.output_names,
                )
            else:
                work = functools.partial(
                    decode_v1,
                    body,
                    signature=mv.inputs,
                    max_elements=settings.max_elements,
                    allow_nan=mv.allow_nan,
                )
            if (json_length or 0) < OFFLOAD_BYTES:
                return work()
            return await self._large.run(work)  # off the loop: see sluice.server.http.decoding

        served = await self.service.infer(
            target,
            _LazyHeaders(scope),
            _LazyQuery(scope["query_string"]),
            decode,
            functools.partial(run_until_disconnect, receive),
        )
        mv, error = served.version, served.error
        if error is None:
            assert mv is not None and served.request is not None and served.outputs is not None
            status = 200
            if protocol == "v2":
                payload, content = encode_v2(
                    model_name=mv.model,
                    model_version=str(mv.version),
                    request=served.request,
                    outputs=served.outputs,
                    output_specs=mv.outputs,
                )
                response_headers = (
                    [(k.encode(), v.encode()) for k, v in content.items()]
                    if len(content) > 1
                    else [(b"content-type", _JSON)]
                )
            else:
                payload = encode_v1(served.outputs, mv.outputs)
                response_headers = [(b"content-type", _JSON)]
        elif isinstance(error, ClientDisconnectedError):
            return  # nobody is there to read an answer
        else:
            status, response_headers, payload = render(error)
        if mv is not None:  # errors too: a failing canary names itself
            response_headers += [
                (b"x-model-version", str(mv.version).encode()),
                (b"x-route-reason", served.reason.encode()),
            ]
        threshold = settings.compress_responses_from_bytes
        if status == 200 and threshold is not None and len(payload) >= threshold:
            accept = headers.get(b"accept-encoding")
            chosen = accepted_encoding(accept) if accept is not None else None
            if chosen is not None:
                payload = compress(payload, chosen)
                response_headers += [(b"content-encoding", chosen.encode()), (b"vary", b"accept-encoding")]
        await _send(send, status, response_headers, payload)


async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]], payload: bytes) -> None:
    headers.append((b"content-length", str(len(payload)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
