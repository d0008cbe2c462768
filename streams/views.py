"""HTTP side of the watch routes: tickets for browsers."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from api.openapi import AUTH_ERRORS, WatchTicketSerializer

from .auth import issue_ticket


class WatchTicketView(APIView):
    """``POST``: a ticket for one watch connection, good for a minute."""

    @extend_schema(request=None, responses={201: WatchTicketSerializer, **AUTH_ERRORS})
    def post(self, request: Request) -> Response:
        ticket = issue_ticket(request.user)
        body = {"ticket": ticket.key, "expires_at": ticket.expires_at}
        return Response(body, status=status.HTTP_201_CREATED)
