from django.contrib import admin
from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView

from api import feeds, views
from streams import http as watch
from streams.metrics import metrics_view
from streams.pages import WatchPageView
from streams.views import WatchTicketView

ID = r"(?P<order_id>[^/]+)"

urlpatterns = [
    path("admin/", admin.site.urls),
    re_path(rf"^api/v1/orders/{ID}/watch/?$", watch.OrderWatchView.as_view()),
    re_path(
        r"^api/v1/customers/(?P<customer_id>[^/]+)/orders/watch/?$",
        watch.CustomerOrdersWatchView.as_view(),
    ),
    re_path(r"^api/v1/dashboard/watch/?$", watch.DashboardWatchView.as_view()),
    re_path(r"^api/v1/events/watch/?$", watch.EventsWatchView.as_view()),
    re_path(r"^api/v1/dashboard/?$", feeds.DashboardView.as_view()),
    re_path(r"^api/v1/events/?$", feeds.EventFeedView.as_view()),
    re_path(r"^api/v1/orders/?$", views.OrdersView.as_view(), name="orders"),
    re_path(rf"^api/v1/orders/{ID}/?$", views.OrderDetailView.as_view(), name="order"),
    re_path(rf"^api/v1/orders/{ID}/items/?$", views.AddItemView.as_view()),
    re_path(
        rf"^api/v1/orders/{ID}/items/(?P<sku>[^/]+)/?$", views.RemoveItemView.as_view()
    ),
    re_path(rf"^api/v1/orders/{ID}/pay/?$", views.PayView.as_view()),
    re_path(rf"^api/v1/orders/{ID}/ship/?$", views.ShipView.as_view()),
    re_path(rf"^api/v1/orders/{ID}/cancel/?$", views.CancelView.as_view()),
    re_path(
        r"^api/v1/customers/(?P<customer_id>[^/]+)/orders/?$",
        views.CustomerOrdersView.as_view(),
        name="customer-orders",
    ),
    re_path(r"^api/v1/watch-tickets/?$", WatchTicketView.as_view()),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("metrics", metrics_view),
    path("watch/", WatchPageView.as_view()),
]

handler400 = "api.errors.bad_request_view"
handler404 = "api.errors.not_found_view"
handler500 = "api.errors.server_error_view"
