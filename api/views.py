"""REST: commands on orders, and queries of the read models."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from django.http import HttpResponse
from django_filters import rest_framework as filters
from rest_framework import generics, status
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.access import Access, order_customer_id
from events import orders
from events.commands import (
    CommandOutcome,
    IdempotencyClaim,
    execute_order_command,
    fingerprint,
)
from events.orders import Order
from events.records import CommandMetadata, NewEvent
from readmodels.models import ID_MAX_LENGTH, CustomerOrders, OrderView
from readmodels.serializers import (
    API_ROOT,
    OrderViewSerializer,
    customer_orders_links,
    order_representation,
)

from .conditional import etag, expected_version, if_none_match
from .openapi import command_schema, read_schema
from .parsers import whole_number
from .serializers import (
    CancelSerializer,
    ItemSerializer,
    PaySerializer,
    PlaceOrderSerializer,
)

Decide = Callable[[Order], list[NewEvent]]


def _not_modified(version: int) -> HttpResponse:
    response = HttpResponse(status=status.HTTP_304_NOT_MODIFIED)
    response["ETag"] = etag(version)
    return response


def _metadata(request: Request) -> CommandMetadata:
    correlation = request.headers.get("X-Correlation-ID") or str(uuid.uuid4())
    return CommandMetadata(
        actor=request.user.get_username(),
        correlation_id=correlation[:100],
        causation_id=request.headers.get("X-Causation-ID", "")[:100],
    )


def _idempotency(request: Request) -> IdempotencyClaim | None:
    key = request.headers.get("Idempotency-Key")
    if not key:
        return None
    if len(key) > MAX_IDEMPOTENCY_KEY:
        # Cutting it short would make two keys one.
        raise ValidationError(
            {"Idempotency-Key": [f"at most {MAX_IDEMPOTENCY_KEY} characters"]}
        )
    digest = fingerprint(request.method, request.path, request.data)
    return IdempotencyClaim(request.user.get_username(), key, digest)


class OrderCommandView(APIView):
    """Runs one command on one order and answers its new representation."""

    def run(
        self,
        request: Request,
        order_id: str,
        decide: Decide,
        *,
        created: bool = False,
    ) -> Response:
        if not created:
            owner = order_customer_id(order_id)
            if owner is None:
                raise NotFound(f"order {order_id} does not exist")
            if not Access(request.user).may_act_for(owner):
                raise PermissionDenied(f"order {order_id} belongs to another customer")

        def respond(order: Order, _recorded: list) -> CommandOutcome:
            row = OrderView.objects.get(order_id=order_id)
            headers = {"ETag": etag(row.version)}
            if created:
                headers["Location"] = f"{API_ROOT}/orders/{order_id}"
            code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
            return CommandOutcome(code, order_representation(row), headers)

        outcome = execute_order_command(
            order_id,
            decide,
            respond,
            metadata=_metadata(request),
            expected_version=None if created else expected_version(request),
            must_exist=not created,
            idempotency=_idempotency(request),
        )
        response = Response(
            outcome.body, status=outcome.status, headers=outcome.headers
        )
        if outcome.replayed:
            response["Idempotent-Replayed"] = "true"
        return response


def _valid(serializer_class: type, request: Request) -> dict[str, Any]:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


MAX_IDEMPOTENCY_KEY = 255


class OrderPagination(CursorPagination):
    ordering = "-placed_position"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def decode_cursor(self, request: Request) -> Any:
        # A cursor the client garbled is a bad parameter (400), not a
        # missing resource (DRF's 404); so is one that decodes to a
        # position that is not a number, which the query would choke on.
        try:
            cursor = super().decode_cursor(request)
        except NotFound as exc:
            raise ValidationError({"cursor": [str(exc.detail)]}) from exc
        # Its position is an OrderView.placed_position.
        position = cursor.position if cursor else None
        if position is not None and whole_number(position, 18) is None:
            raise ValidationError({"cursor": [self.invalid_cursor_message]})
        return cursor

    def get_page_size(self, request: Request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        size = whole_number(raw, 18)
        if size is None or not 1 <= size <= self.max_page_size:
            raise ValidationError(
                {"page_size": [f"a whole number from 1 to {self.max_page_size}"]}
            )
        return size


class OrderFilter(filters.FilterSet):
    # An unknown status is a client's mistake: 400, not an empty list.
    status = filters.ChoiceFilter(choices=[(s, s) for s in orders.STATUSES])

    class Meta:
        model = OrderView
        fields = ["customer_id", "status"]


class OrdersView(OrderCommandView, generics.ListAPIView):
    """``GET``: orders, newest first. ``POST``: place an order."""

    serializer_class = OrderViewSerializer
    pagination_class = OrderPagination
    filter_backends = [filters.DjangoFilterBackend]
    filterset_class = OrderFilter

    def get_queryset(self):
        access = Access(self.request.user)
        queryset = OrderView.objects.all()
        if access.staff:
            return queryset
        wanted = self.request.query_params.get("customer_id")
        if wanted and wanted != access.customer_id:
            raise PermissionDenied("you may list only your own orders")
        return queryset.filter(customer_id=access.customer_id or "")

    @command_schema(PlaceOrderSerializer, created=True)
    def post(self, request: Request) -> Response:
        data = _valid(PlaceOrderSerializer, request)
        access = Access(request.user)
        customer_id = data.get("customer_id") or access.customer_id
        if not customer_id and access.staff:
            raise ValidationError(
                {"customer_id": ["staff must name the customer of an order"]}
            )
        if not customer_id or not access.may_act_for(customer_id):
            raise PermissionDenied("you may place orders only for your own customer")

        items = [(i["sku"], i["quantity"], i["unit_price"]) for i in data["items"]]
        order_id = str(uuid.uuid4())
        return self.run(
            request,
            order_id,
            lambda order: orders.decide_place(order, customer_id, items),
            created=True,
        )


class OrderDetailView(APIView):
    """One order. ``ETag`` is its version; ``If-None-Match`` gives 304."""

    @read_schema(OrderViewSerializer)
    def get(self, request: Request, order_id: str) -> Response | HttpResponse:
        row = OrderView.objects.filter(order_id=order_id).first()
        if row is None:
            raise NotFound(f"order {order_id} does not exist")
        if not Access(request.user).may_read_order(row.customer_id):
            raise PermissionDenied(f"order {order_id} belongs to another customer")
        if if_none_match(request, row.version):
            return _not_modified(row.version)
        return Response(order_representation(row), headers={"ETag": etag(row.version)})


class AddItemView(OrderCommandView):
    @command_schema(ItemSerializer)
    def post(self, request: Request, order_id: str) -> Response:
        item = _valid(ItemSerializer, request)
        return self.run(
            request,
            order_id,
            lambda order: orders.decide_add_item(
                order, item["sku"], item["quantity"], item["unit_price"]
            ),
        )


class RemoveItemView(OrderCommandView):
    @command_schema(None)
    def delete(self, request: Request, order_id: str, sku: str) -> Response:
        return self.run(
            request, order_id, lambda order: orders.decide_remove_item(order, sku)
        )


class PayView(OrderCommandView):
    @command_schema(PaySerializer)
    def post(self, request: Request, order_id: str) -> Response:
        payment = _valid(PaySerializer, request)
        return self.run(
            request,
            order_id,
            lambda order: orders.decide_pay(
                order, payment["amount"], payment["method"]
            ),
        )


class ShipView(OrderCommandView):
    @command_schema(None)
    def post(self, request: Request, order_id: str) -> Response:
        return self.run(request, order_id, orders.decide_ship)


class CancelView(OrderCommandView):
    @command_schema(CancelSerializer)
    def post(self, request: Request, order_id: str) -> Response:
        reason = _valid(CancelSerializer, request)["reason"]
        return self.run(
            request, order_id, lambda order: orders.decide_cancel(order, reason)
        )


class CustomerOrdersView(generics.GenericAPIView):
    """One customer's orders with the version of their topic."""

    serializer_class = OrderViewSerializer
    pagination_class = OrderPagination

    def get(self, request: Request, customer_id: str) -> Response | HttpResponse:
        if not Access(request.user).may_act_for(customer_id):
            raise PermissionDenied("you may read only your own customer's orders")
        if len(customer_id) > ID_MAX_LENGTH:
            # No order can name it, so neither its list nor its topic exists.
            raise NotFound(f"customer ids are at most {ID_MAX_LENGTH} characters")

        # The version is read before the rows: rows can then only be newer
        # than the version, so a watch from it misses nothing.
        summary = CustomerOrders.objects.filter(customer_id=customer_id).first()
        version = summary.version if summary else 0
        if if_none_match(request, version):
            return _not_modified(version)

        queryset = OrderView.objects.filter(customer_id=customer_id)
        page = self.paginate_queryset(queryset)
        body = {
            "customer_id": customer_id,
            "version": version,
            "order_count": summary.order_count if summary else 0,
            "orders": self.get_serializer(page, many=True).data,
            "next": self.paginator.get_next_link(),
            "previous": self.paginator.get_previous_link(),
            "_links": customer_orders_links(customer_id),
        }
        return Response(body, headers={"ETag": etag(version)})
