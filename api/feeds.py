"""REST for the asynchronous read models: the dashboard and the raw event
feed. Both are staff only."""

from __future__ import annotations

from urllib.parse import urlencode

from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from events.store import read_all
from readmodels.models import Dashboard
from readmodels.projections.dashboard import dashboard_representation
from readmodels.projections.event_feed import TOPIC as EVENTS_TOPIC
from readmodels.projections.event_feed import event_representation
from readmodels.serializers import API_ROOT, watch_links
from readmodels.topics import current_version

from .conditional import etag, if_none_match
from .openapi import (
    AUTH_ERRORS,
    DashboardSerializer,
    EventFeedSerializer,
    error_response,
    read_schema,
)

MAX_FEED_LIMIT = 1000


class DashboardView(APIView):
    """Figures across all orders, as of the dashboard's version."""

    permission_classes = [IsAdminUser]

    @read_schema(DashboardSerializer)
    def get(self, request: Request) -> Response | HttpResponse:
        dashboard = Dashboard.objects.filter(id=1).first() or Dashboard(id=1)
        if if_none_match(request, dashboard.version):
            response = HttpResponse(status=304)
            response["ETag"] = etag(dashboard.version)
            return response
        body = dashboard_representation(dashboard)
        return Response(body, headers={"ETag": etag(dashboard.version)})


class EventFeedQuery(serializers.Serializer):
    # Positions are 64-bit: a larger one is a mistake, not an empty page.
    after = serializers.IntegerField(min_value=0, max_value=2**63 - 1, default=0)
    limit = serializers.IntegerField(min_value=1, max_value=MAX_FEED_LIMIT, default=100)
    stream_id = serializers.CharField(required=False, max_length=100)
    type = serializers.CharField(required=False, max_length=100)


class EventFeedView(APIView):
    """The raw event feed in position order. ``version`` is topic
    ``events``, which the worker publishes; it can trail the store."""

    permission_classes = [IsAdminUser]

    @extend_schema(
        parameters=[EventFeedQuery],
        responses={
            200: EventFeedSerializer,
            400: error_response("A query parameter is not valid."),
            **AUTH_ERRORS,
            403: error_response("Staff only."),
        },
    )
    def get(self, request: Request) -> Response:
        query = EventFeedQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data

        version = current_version(EVENTS_TOPIC)
        types = [params["type"]] if params.get("type") else None
        events = read_all(
            params["after"], params["limit"], params.get("stream_id"), types
        )
        last = events[-1].position if events else params["after"]
        following = {"after": last, "limit": params["limit"]}
        following.update(
            {key: params[key] for key in ("stream_id", "type") if params.get(key)}
        )
        body = {
            "version": version,
            "events": [event_representation(e) for e in events],
            "next": f"{API_ROOT}/events/?{urlencode(following)}",
            "_links": watch_links(f"{API_ROOT}/events", EVENTS_TOPIC),
        }
        return Response(body)
