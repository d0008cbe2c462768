"""One place that turns every error into the protocol's error body:
``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response

from events.errors import (
    IdempotencyKeyReused,
    RuleViolation,
    StreamNotFound,
    VersionConflict,
)

logger = logging.getLogger(__name__)


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def handle_exception(exc: Exception, context: dict) -> Response | None:
    """DRF's exception handler: map errors to status and code."""
    code, status_code, message, details = _classify(exc)
    if code is None:
        return None
    headers = {}
    if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
        headers["Retry-After"] = str(int(exc.wait) + 1)
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if isinstance(exc, VersionConflict) and exc.actual >= 0:
        headers["ETag"] = f'"{exc.actual}"'
    return Response(
        error_body(code, message, details), status=status_code, headers=headers
    )


def _classify(exc: Exception) -> tuple[str | None, int, str, Any]:
    if isinstance(exc, VersionConflict):
        code = status.HTTP_412_PRECONDITION_FAILED if exc.precondition else 409
        details = {
            "stream_id": exc.stream_id,
            "expected_version": exc.expected,
            "current_version": exc.actual,
        }
        return "version_conflict", code, str(exc), details
    if isinstance(exc, RuleViolation):
        return "rule_violation", 422, exc.message, {"rule": exc.rule}
    if isinstance(exc, IdempotencyKeyReused):
        return "idempotency_key_reused", 422, str(exc), {"key": exc.key}
    if isinstance(exc, StreamNotFound | Http404 | exceptions.NotFound):
        return "not_found", 404, _message(exc, "not found"), None
    if isinstance(exc, exceptions.ValidationError):
        return "validation_error", 400, "the request is not valid", exc.detail
    if isinstance(exc, RecursionError):
        return "validation_error", 400, "the request body is nested too deeply", None
    if isinstance(exc, exceptions.ParseError):
        return "validation_error", 400, str(exc.detail), None
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        return "not_authenticated", 401, str(exc.detail), None
    if isinstance(exc, exceptions.PermissionDenied | DjangoPermissionDenied):
        return "forbidden", 403, _message(exc, "forbidden"), None
    if isinstance(exc, exceptions.Throttled):
        return "rate_limited", 429, str(exc.detail), None
    if isinstance(exc, exceptions.APIException):
        return exc.default_code, exc.status_code, str(exc.detail), None
    return None, 500, "", None


def _message(exc: Exception, default: str) -> str:
    detail = getattr(exc, "detail", None) or (exc.args[0] if exc.args else "")
    return str(detail) or default


def not_found_view(
    request: HttpRequest, exception: Exception | None = None
) -> JsonResponse:
    return JsonResponse(
        error_body("not_found", f"no resource at {request.path}"), status=404
    )


def payload_too_large() -> JsonResponse:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    body = error_body(
        "payload_too_large",
        f"the request body is larger than {limit} bytes",
        {"max_bytes": limit},
    )
    return JsonResponse(body, status=413)


def bad_request_view(
    request: HttpRequest, exception: Exception | None = None
) -> JsonResponse:
    """Requests that Django refuses before any view runs: a body above
    ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (413), or another suspicious one."""
    if isinstance(exception, RequestDataTooBig):
        return payload_too_large()
    return JsonResponse(
        error_body("validation_error", "the request cannot be served"), status=400
    )


class OversizedBodyLogFilter(logging.Filter):
    """Django logs a body over the upload limit as a security error, with
    a traceback; it is a refused request (413), logged as a warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "refused_body", False):
            return True  # already rewritten, by this filter on another handler
        record.refused_body = True
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info = record.exc_text = None
        record.msg = f"refused a request body: {record.getMessage()} (413)"
        record.args = ()
        return True


def server_error_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse(error_body("server_error", "the server failed"), status=500)
