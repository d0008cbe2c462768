"""Lookout's ASGI application plus one route for the fan-out baseline.

``/bench/trivial/?topic=T`` is a plain Channels consumer: it joins the
topic's group itself and forwards each group message's text as it comes,
one group member per socket, as a textbook Channels application does. It
receives the same group sends from the relay as Lookout's own topic hubs.
Served by ``bench/fanout.py`` only.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from project.asgi import application as lookout
from streams.relay import ensure_relay
from streams.watch import group_name


class TrivialGroupConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        query = parse_qs(self.scope["query_string"].decode())
        self.group = group_name(query["topic"][0])
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def change_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["message"])


trivial = TrivialGroupConsumer.as_asgi()


async def application(scope: dict, receive: Any, send: Any) -> None:
    if scope["type"] == "websocket" and scope["path"] == "/bench/trivial/":
        # Start Lookout's relay on this loop, as any request of its own does.
        ensure_relay()
        return await trivial(scope, receive, send)
    return await lookout(scope, receive, send)
