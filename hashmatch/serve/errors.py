"""One error type for the service: it becomes a JSON ``{"message": ...}`` answer (HMA's
error shape) with its HTTP status."""
from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def not_found(message: str) -> ApiError:
    return ApiError(404, message)


def unavailable(message: str) -> ApiError:
    return ApiError(503, message, {"Retry-After": "1"})
