"""What drf-spectacular cannot guess from the plain ``APIView`` classes:
request bodies, answers and the headers that commands read. The views
apply these with ``extend_schema``; the watch routes are in ``schema``."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers

from readmodels.serializers import OrderViewSerializer

__all__ = [
    "AUTH_ERRORS",
    "DashboardSerializer",
    "EventFeedSerializer",
    "WatchTicketSerializer",
    "error_response",
    "command_schema",
    "read_schema",
]


class ErrorBodySerializer(serializers.Serializer):
    code = serializers.ChoiceField(
        choices=[
            "validation_error",
            "not_authenticated",
            "forbidden",
            "not_found",
            "version_conflict",
            "rule_violation",
            "idempotency_key_reused",
        ]
    )
    message = serializers.CharField()
    details = serializers.JSONField()


class ErrorSerializer(serializers.Serializer):
    error = ErrorBodySerializer()


def error_response(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


COMMAND_HEADERS = [
    OpenApiParameter(
        "If-Match",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        description='The order version the command expects, as `"5"`; 412 '
        "if the order has moved on.",
    ),
    OpenApiParameter(
        "Idempotency-Key",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        description="Repeating a command with the same key and body answers "
        "the first result again (header `Idempotent-Replayed: true`).",
    ),
    OpenApiParameter(
        "X-Correlation-ID",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        description="Recorded in the events' metadata.",
    ),
]

AUTH_ERRORS = {401: error_response("No or bad credentials.")}
READ_ERRORS = {
    **AUTH_ERRORS,
    403: error_response("You may not read or change this resource."),
    404: error_response("No such order."),
}


def command_schema(request: type | None, created: bool = False):
    """The schema of a command on an order: its body, the order it
    answers, and every error the command can end in."""
    ok = 201 if created else 200
    return extend_schema(
        request=request,
        parameters=COMMAND_HEADERS,
        responses={
            ok: OrderViewSerializer,
            400: error_response("The body is not valid."),
            **READ_ERRORS,
            409: error_response("Another command changed the order meanwhile."),
            412: error_response("If-Match names another version than the order's."),
            422: error_response(
                "A business rule refused the command (details.rule), or the "
                "Idempotency-Key came with another body."
            ),
        },
    )


def read_schema(response: type | OpenApiResponse | dict):
    """The schema of a read: its answer, 304 for a current ETag, and the
    errors of a read."""
    return extend_schema(
        parameters=[
            OpenApiParameter(
                "If-None-Match",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description="The ETag (version) you hold; 304 if it is current.",
            )
        ],
        responses={
            200: response,
            304: OpenApiResponse(description="Not modified."),
            **READ_ERRORS,
        },
    )


def _links_field() -> serializers.JSONField:
    return serializers.JSONField(help_text="Watch routes of this resource.")


class DashboardSerializer(serializers.Serializer):
    order_count = serializers.IntegerField()
    by_status = serializers.DictField(child=serializers.IntegerField())
    revenue = serializers.CharField(
        help_text="Paid and not refunded, as decimal text with two places; "
        "no upper bound."
    )
    position = serializers.IntegerField(help_text="Last event applied.")
    updated_at = serializers.DateTimeField(allow_null=True)
    version = serializers.IntegerField()
    _links = _links_field()


class FeedEventSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    position = serializers.IntegerField()
    stream_id = serializers.CharField()
    stream_type = serializers.CharField()
    stream_version = serializers.IntegerField()
    type = serializers.CharField()
    data = serializers.JSONField()
    metadata = serializers.JSONField()
    recorded_at = serializers.DateTimeField()


class EventFeedSerializer(serializers.Serializer):
    version = serializers.IntegerField(help_text="Version of topic events.")
    events = FeedEventSerializer(many=True)
    next = serializers.CharField(help_text="The URL of the following page.")
    _links = _links_field()


class WatchTicketSerializer(serializers.Serializer):
    ticket = serializers.CharField(
        help_text="Pass as ?ticket= on one watch connection."
    )
    expires_at = serializers.DateTimeField()
