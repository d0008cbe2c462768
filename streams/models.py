"""Watch tickets: a browser cannot set headers on ``EventSource`` or
``WebSocket``, so it trades its session or token for a short-lived ticket
and passes it as ``?ticket=``."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models


def new_ticket_key() -> str:
    return secrets.token_urlsafe(32)


class WatchTicket(models.Model):
    key = models.CharField(max_length=64, unique=True, default=new_ticket_key)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "streams_watch_ticket"

    def __str__(self) -> str:
        return f"ticket for {self.user} until {self.expires_at:%H:%M:%S}"
