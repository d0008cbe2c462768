"""WebSocket routes. The per-resource ones share their path with the HTTP
watch routes; the protocol (upgrade or not) picks the transport."""

from django.urls import re_path

from .websocket import (
    CustomerOrdersWatchConsumer,
    MultiplexWatchConsumer,
    OrderWatchConsumer,
)

websocket_urlpatterns = [
    re_path(r"^ws/v1/?$", MultiplexWatchConsumer.as_asgi()),
    re_path(
        r"^api/v1/orders/(?P<order_id>[^/]+)/watch/?$", OrderWatchConsumer.as_asgi()
    ),
    re_path(
        r"^api/v1/customers/(?P<customer_id>[^/]+)/orders/watch/?$",
        CustomerOrdersWatchConsumer.as_asgi(),
    ),
]
