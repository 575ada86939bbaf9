"""The whole exception tree of sluice, and nothing else.

Every failure a client can cause or observe is a ``SluiceError`` carrying its HTTP status and a stable
machine-readable ``code``. One handler (in ``sluice.server.app``) turns it into
``{"error": message, "code": code, "details": {...}}``. Foreign errors (onnxruntime, orjson, numpy,
skl2onnx) are translated at one boundary each with ``raise ... from exc``.

    SluiceError
    ├── BadRequestError            400  malformed body, bad lengths, bad parameters
    │   └── UnsupportedMediaError  415  a content type or encoding we do not read
    ├── UnauthorizedError          401
    ├── ForbiddenError             403
    ├── NotFoundError              404
    │   ├── ModelNotFoundError
    │   └── VersionNotFoundError
    ├── BodyTooLargeError          413
    ├── InvalidInputError          422  valid JSON that does not fit the model's signature
    ├── OverloadedError            503  queue full (Retry-After)
    ├── NotReadyError              503  model or server not ready (Retry-After)
    ├── DeadlineExceededError      504
    ├── ClientDisconnectedError    499  the client left before its answer (counted, never sent)
    ├── ConfigError                -    a settings/config file that cannot be used (start or reload)
    ├── ConversionError            -    a model that cannot be converted or fails parity
    └── ModelLoadError             400  an artifact that cannot be loaded (admin load API)
    InternalError                  500  a genuine server fault (e.g. onnxruntime failed on valid input)
"""

from __future__ import annotations

from typing import Any


class SluiceError(Exception):
    """Base of every sluice error: a message, an HTTP status, a stable code and optional details."""

    status: int = 500
    code: str = "internal"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message, "code": self.code}
        if self.details:
            body["details"] = self.details
        return body


class BadRequestError(SluiceError):
    status = 400
    code = "bad_request"


class UnsupportedMediaError(BadRequestError):
    status = 415
    code = "unsupported_media_type"


class UnauthorizedError(SluiceError):
    status = 401
    code = "unauthorized"


class ForbiddenError(SluiceError):
    status = 403
    code = "forbidden"


class NotFoundError(SluiceError):
    status = 404
    code = "not_found"


class ModelNotFoundError(NotFoundError):
    code = "model_not_found"


class VersionNotFoundError(NotFoundError):
    code = "version_not_found"


class BodyTooLargeError(SluiceError):
    status = 413
    code = "body_too_large"


class InvalidInputError(SluiceError):
    status = 422
    code = "invalid_input"


class OverloadedError(SluiceError):
    """The request was shed before it ran; the client should retry after ``retry_after_s``."""

    status = 503
    code = "overloaded"

    def __init__(
        self, message: str, *, retry_after_s: int = 1, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, details=details)
        self.retry_after_s = retry_after_s


class NotReadyError(OverloadedError):
    code = "not_ready"


class DeadlineExceededError(SluiceError):
    status = 504
    code = "deadline_exceeded"


class ClientDisconnectedError(SluiceError):
    """The client went away before its answer was ready (nginx's 499; nobody reads the response)."""

    status = 499
    code = "client_disconnected"


class InternalError(SluiceError):
    status = 500
    code = "internal"


class ConfigError(SluiceError):
    """A settings or configuration file that cannot be used; raised at start or on a rejected reload."""

    status = 400
    code = "config"


class ConversionError(SluiceError):
    """A model that cannot be converted, or whose ONNX graph disagrees with it (nothing is written)."""

    status = 400
    code = "conversion"


class ModelLoadError(SluiceError):
    """A model artifact that cannot be loaded (corrupt ONNX, bad manifest); that version never serves."""

    status = 500
    code = "model_load"
