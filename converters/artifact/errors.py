"""The whole exception tree of sluice, and nothing else.

Every failure a client can cause or observe is a ``SluiceError`` carrying its HTTP status and a stable
machine-readable ``code``. One renderer (``sluice.server.http.errors``) turns it into
``{"error": message, "code": code, "details": {...}}``. Foreign errors (onnxruntime, orjson, numpy,
skl2onnx, Prometheus' HTTP API) are translated at one boundary each with ``raise ... from exc``.
The tree below is checked against the classes by a test (status, then code):

    SluiceError                      500 internal
    ├── BadRequestError              400 bad_request          malformed body, lengths, parameters
    │   └── UnsupportedMediaError    415 unsupported_media_type   a type or encoding not read
    ├── UnauthorizedError            401 unauthorized
    ├── ForbiddenError               403 forbidden
    ├── NotFoundError                404 not_found
    │   ├── ModelNotFoundError       404 model_not_found
    │   └── VersionNotFoundError     404 version_not_found
    ├── BodyTooLargeError            413 body_too_large
    ├── InvalidInputError            422 invalid_input        JSON that does not fit the signature
    ├── ClientDisconnectedError      499 client_disconnected  the client left (counted, never sent)
    ├── InternalError                500 internal             a genuine server fault
    ├── PrometheusError              502 prometheus           gate figures unreadable
    ├── OverloadedError              503 overloaded           shed before it ran (Retry-After)
    │   └── NotReadyError            503 not_ready            not ready yet (Retry-After)
    ├── DeadlineExceededError        504 deadline_exceeded
    ├── ConfigError                  400 config               a settings or config file
    │   └── RolloutConfigError       400 config               a rollouts file, every problem
    ├── ConversionError              400 conversion           cannot convert, or fails parity
    └── ModelLoadError               400 model_load           an artifact that cannot load
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

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors cross process boundaries (large bodies are decoded in worker processes): keep the
        # message, the details and any attribute of a subclass (Retry-After), whatever its __init__ takes.
        return (_restore, (type(self), self.message, dict(self.__dict__)))

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

    status = 400
    code = "model_load"


class RolloutConfigError(ConfigError):
    """A rollouts file that cannot apply; ``problems`` lists every reason, one message each."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}: " + "; ".join(problems), details={"problems": problems})
        self.problems = problems


class PrometheusError(SluiceError):
    """Prometheus could not be asked, or answered something unusable (a rollout gate's figures)."""

    status = 502
    code = "prometheus"


def _restore(cls: type[SluiceError], message: str, state: dict[str, Any]) -> SluiceError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error
