"""WebSocket routes. The per-resource ones share their path with the HTTP
watch routes; the protocol (upgrade or not) picks the transport."""

from django.urls import re_path

from . import websocket

websocket_urlpatterns = [
    re_path(r"^ws/v1/?$", websocket.MultiplexWatchConsumer.as_asgi()),
    re_path(
        r"^api/v1/orders/(?P<order_id>[^/\x00]+)/watch/?$",
        websocket.OrderWatchConsumer.as_asgi(),
    ),
    re_path(
        r"^api/v1/customers/(?P<customer_id>[^/\x00]+)/orders/watch/?$",
        websocket.CustomerOrdersWatchConsumer.as_asgi(),
    ),
    re_path(r"^api/v1/dashboard/watch/?$", websocket.DashboardWatchConsumer.as_asgi()),
    re_path(r"^api/v1/events/watch/?$", websocket.EventsWatchConsumer.as_asgi()),
    re_path(r"", websocket.NoRouteConsumer.as_asgi()),
]
