"""uvicorn's httptools protocol with a public gateway's limits: header and body time-outs, JSON errors.

uvicorn bounds idle keep-alive connections, but not a client that opens a connection and sends its
headers (or its body) one byte a second: such a client holds a connection, and a request task, for ever.
``GuardedProtocol`` arms a timer when a request begins (or the connection opens): the headers must be
complete within ``header_timeout_s`` (else 408 and close), and the body within ``body_timeout_s`` after
them (else the connection is closed; the app sees a disconnect). A request line or header that does not
parse is answered with the same JSON error body as every other error, instead of uvicorn's plain text.

uvicorn builds one protocol object per connection from the class, in every worker process, so the limits
are class attributes set once by ``configure`` when the app is created (``create_app``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("sluice.http")

_REASONS = {400: b"Bad Request", 408: b"Request Timeout"}


def error_bytes(status: int, message: str, code: str) -> bytes:
    """A whole HTTP/1.1 response carrying sluice's JSON error body; the connection closes after it."""
    body = orjson.dumps({"error": message, "code": code})
    head = (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
        % (status, _REASONS[status], len(body))
    )
    return head + body


class GuardedProtocol(HttpToolsProtocol):
    """One connection; see the module docstring."""

    header_timeout_s = 10.0
    body_timeout_s = 30.0

    @classmethod
    def configure(cls, *, header_timeout_s: float, body_timeout_s: float) -> None:
        cls.header_timeout_s = header_timeout_s
        cls.body_timeout_s = body_timeout_s

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guard: asyncio.TimerHandle | None = None

    def _arm(self, seconds: float, expired: Any) -> None:
        self._disarm()
        self._guard = self.loop.call_later(seconds, expired)

    def _disarm(self) -> None:
        if self._guard is not None:
            self._guard.cancel()
            self._guard = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout_s, self._headers_too_slow)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm(self.header_timeout_s, self._headers_too_slow)

    def on_headers_complete(self) -> None:
        self._arm(self.body_timeout_s, self._body_too_slow)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        if not self.transport.is_closing():
            self.transport.write(error_bytes(400, "malformed HTTP request", "bad_request"))
            self.transport.close()

    def _headers_too_slow(self) -> None:
        self._guard = None
        if not self.transport.is_closing():
            message = f"request headers not received within {self.header_timeout_s:g} s"
            self.transport.write(error_bytes(408, message, "request_timeout"))
            self.transport.close()

    def _body_too_slow(self) -> None:
        self._guard = None
        if not self.transport.is_closing():
            log.info("closing a connection whose body took over %g s", self.body_timeout_s)
            self.transport.close()
