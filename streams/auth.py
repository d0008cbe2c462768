"""Who is on a watch: from a one-time ``?ticket=``, an ``Authorization:
Token`` header, or the session cookie, in that order.

Browsers send cookies with a WebSocket handshake to any site and apply no
same-origin policy to it, so a page elsewhere could watch as whoever is
signed in here. The session therefore counts only when the handshake comes
from this site's own origin (the ``Host`` it was sent to, or
``X-Forwarded-Host`` under ``USE_X_FORWARDED_HOST``; or one of
``CSRF_TRUSTED_ORIGINS``), or from no browser at all (no ``Origin``).
Tickets and tokens are not sent by the browser on its own, and count from
any origin.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from channels.auth import AuthMiddlewareStack
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.utils import timezone
from django.utils.http import is_same_domain
from rest_framework.authtoken.models import Token

from . import conf
from .models import WatchTicket
from .watch import off_loop

__all__ = ["WatchAuthMiddleware", "issue_ticket", "redeem_ticket", "user_for_token"]

logger = logging.getLogger(__name__)


def issue_ticket(user: Any) -> WatchTicket:
    expires_at = timezone.now() + timedelta(seconds=conf.get("TICKET_TTL_SECS"))
    return WatchTicket.objects.create(user=user, expires_at=expires_at)


def redeem_ticket(key: str) -> Any | None:
    """The ticket's user, once: a second use, or a late one, finds none."""
    if not _may_be_key(key):
        return None
    now = timezone.now()
    claimed = WatchTicket.objects.filter(
        key=key, used_at__isnull=True, expires_at__gt=now
    ).update(used_at=now)
    if not claimed:
        return None
    return WatchTicket.objects.select_related("user").get(key=key).user


def user_for_token(key: str) -> Any | None:
    if not _may_be_key(key):
        return None
    token = Token.objects.select_related("user").filter(key=key).first()
    return token.user if token else None


def _may_be_key(key: str) -> bool:
    # Keys are short and printable; PostgreSQL refuses a NUL in a lookup.
    return len(key) <= 100 and "\x00" not in key


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def credentials(scope: dict) -> tuple[str, str] | None:
    """``("ticket", t)`` or ``("token", k)`` from the request, if any."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if query.get("ticket"):
        return "ticket", query["ticket"][0]
    scheme, _, key = (_header(scope, b"authorization") or "").partition(" ")
    if scheme.lower() == "token" and key.strip():
        return "token", key.strip()
    return None


@off_loop
def _resolve(kind: str, key: str) -> Any:
    user = redeem_ticket(key) if kind == "ticket" else user_for_token(key)
    if user is None or not user.is_active:
        return AnonymousUser()
    return user


_DEFAULT_PORTS = {"http": "80", "https": "443"}


def _site(scheme: str, netloc: str) -> str:
    """``host[:port]`` as a browser writes it in ``Origin``: lowercase,
    without the scheme's default port."""
    netloc = netloc.lower()
    port = _DEFAULT_PORTS.get(scheme)
    if port and netloc.endswith(f":{port}"):
        return netloc[: -len(port) - 1]
    return netloc


def _host(scope: dict) -> str | None:
    """The host the handshake was sent to, as Django's request.get_host()
    reads it: ``X-Forwarded-Host`` first where USE_X_FORWARDED_HOST says a
    proxy sets it."""
    if settings.USE_X_FORWARDED_HOST:
        forwarded = _header(scope, b"x-forwarded-host")
        if forwarded:
            return forwarded.split(",")[0].strip()
    return _header(scope, b"host")


def _trusted(scheme: str, site: str) -> bool:
    """In CSRF_TRUSTED_ORIGINS, read as Django's CSRF check reads it: whole
    origins, or ``scheme://*.domain`` for any subdomain."""
    for entry in settings.CSRF_TRUSTED_ORIGINS:
        trusted = urlsplit(entry)
        if trusted.scheme != scheme:
            continue
        pattern = _site(scheme, trusted.netloc)
        if pattern.startswith("*"):
            if is_same_domain(site, pattern[1:]):
                return True
        elif pattern == site:
            return True
    return False


def foreign_origin(scope: dict) -> str | None:
    """The handshake's ``Origin`` if it is not this site's, else None."""
    origin = _header(scope, b"origin")
    if origin is None:
        return None
    parts = urlsplit(origin)
    if parts.scheme not in _DEFAULT_PORTS or not parts.netloc:
        return origin
    site = _site(parts.scheme, parts.netloc)
    host = _host(scope)
    if host and site in (_site("http", host), _site("https", host)):
        return None
    if _trusted(parts.scheme, site):
        return None
    return origin


class _CredentialsMiddleware:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        found = credentials(scope)
        if found:
            scope = {**scope, "user": await _resolve(*found)}
            scope["auth_via"] = found[0]
        elif scope["type"] == "websocket" and (origin := foreign_origin(scope)):
            # The session counts only from this site's pages.
            logger.info("watch from origin %s: its session cookie is not used", origin)
            scope = {**scope, "user": AnonymousUser()}
        return await self.inner(scope, receive, send)


def WatchAuthMiddleware(inner: Any) -> Any:  # noqa: N802 - reads as a class
    """Session auth underneath, explicit credentials on top."""
    return AuthMiddlewareStack(_CredentialsMiddleware(inner))
