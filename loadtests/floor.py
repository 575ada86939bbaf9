"""The floor of the stack: a raw ASGI app on the gateway's own uvicorn (httptools + uvloop).

It reads the whole request body, parses it with orjson and answers it back with orjson: the least work
any JSON inference server on this stack can do per request (no routing, no Starlette objects, no model).
P1 compares the gateway with it. ``python -m loadtests.floor --port 8001`` serves it on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_HEADERS = [(b"content-type", b"application/json")]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Echo the JSON body through orjson (400 on a body that is not JSON)."""
    if scope["type"] != "http":
        return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    try:
        payload = orjson.dumps(orjson.loads(b"".join(chunks)))
        status = 200
    except orjson.JSONDecodeError:
        payload, status = b'{"error":"not JSON"}', 400
    headers = [*_HEADERS, (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def main() -> int:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        http="httptools",
        loop="uvloop",
        lifespan="off",
        access_log=False,
        log_level=args.log_level,
        server_header=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
