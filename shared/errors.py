"""The protocol's error vocabulary. Each type carries its code and HTTP status; one
middleware (shared.api) turns them into upstream's `{code, message, requestInfo}` body."""

from __future__ import annotations

from typing import ClassVar


class ApiError(Exception):
    code: ClassVar[str] = "InternalServerError"
    status: ClassVar[int] = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MalformedPayload(ApiError):
    code, status = "MalformedPayload", 400


class InvalidRequestArguments(ApiError):
    code, status = "InvalidRequestArguments", 400


class InputValidationError(ApiError):
    code, status = "InputValidationError", 400


class InputError(ApiError):
    code, status = "InputError", 400


class AuthenticationFailed(ApiError):
    code, status = "AuthenticationFailed", 401


class InsufficientScopes(ApiError):
    code, status = "InsufficientScopes", 403


class ResourceNotFound(ApiError):
    code, status = "ResourceNotFound", 404


class RequestConflict(ApiError):
    code, status = "RequestConflict", 409


class ResourceExpired(ApiError):
    code, status = "ResourceExpired", 410


class RequestTimeout(ApiError):
    """The request body arrived too slowly (a client trickling bytes holds a connection)."""

    code, status = "RequestTimeout", 408


class ServiceUnavailable(ApiError):
    """A dependency (MongoDB, RabbitMQ) cannot be reached: `__heartbeat__` says so."""

    code, status = "ServiceUnavailable", 503


class InputTooLarge(ApiError):
    code, status = "InputTooLarge", 413
