"""ASGI entry point: HTTP through Django, WebSocket through Channels.

On its first connection the server starts, on its own event loop, the
outbox relay and (in the embedded mode) the projection worker. Under
daphne, SIGTERM drains the watchers before the server stops (see
``streams.shutdown``).
"""

import os
import threading
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from api.bodies import MeasureUnsizedBodies  # noqa: E402
from readmodels import conf as readmodels_conf  # noqa: E402
from readmodels.worker import start_in_background  # noqa: E402
from streams.auth import WatchAuthMiddleware  # noqa: E402
from streams.collector import apply_gc_thresholds  # noqa: E402
from streams.relay import ensure_relay  # noqa: E402
from streams.routing import websocket_urlpatterns  # noqa: E402
from streams.shutdown import drain_on_sigterm, in_flight  # noqa: E402

_worker_started = threading.Lock()
_worker: list = []


class StartServices:
    """Starts the relay on the serving loop, and the in-process worker;
    counts what is being served, so that a drain can wait for it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        if scope["type"] in ("http", "websocket"):
            ensure_relay()
            if readmodels_conf.get("WORKER_IN_SERVER") and not _worker:
                with _worker_started:
                    if not _worker:
                        _worker.append(start_in_background())
            with in_flight():
                return await self.app(scope, receive, send)
        return await self.app(scope, receive, send)


drain_on_sigterm()
apply_gc_thresholds()

application = StartServices(
    ProtocolTypeRouter(
        {
            "http": MeasureUnsizedBodies(django_asgi_app),
            "websocket": WatchAuthMiddleware(URLRouter(websocket_urlpatterns)),
        }
    )
)
