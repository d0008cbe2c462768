"""Lookout's ASGI application plus one route for the fan-out baseline.

``/bench/trivial/?topic=T`` is a plain Channels consumer: it joins the
topic's group itself and forwards each group message's text as it comes,
one group member per socket, as a textbook Channels application does. It
receives the same group sends from the relay as Lookout's own topic hubs.
Served by ``bench/fanout.py`` only.
"""

from __future__ import annotations

import asyncio
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
        await patiently(self.channel_layer.group_add, self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await patiently(self.channel_layer.group_discard, self.group, self.channel_name)

    async def change_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["message"])


async def patiently(operation: Any, *args: Any) -> None:
    """A group operation, tried again while the Redis layer's connection
    pool is exhausted: a thousand sockets that connect at once each make
    their own, and without this some never join and the run waits for
    them (Lookout's hub makes one per process and topic)."""
    for attempt in range(50):
        try:
            await operation(*args)
            return
        except Exception as exc:
            if type(exc).__name__ != "MaxConnectionsError" or attempt == 49:
                raise
            await asyncio.sleep(0.02 * (attempt + 1))


trivial = TrivialGroupConsumer.as_asgi()


async def application(scope: dict, receive: Any, send: Any) -> None:
    if scope["type"] == "websocket" and scope["path"] == "/bench/trivial/":
        # Start Lookout's relay on this loop, as any request of its own does.
        ensure_relay()
        return await trivial(scope, receive, send)
    return await lookout(scope, receive, send)
