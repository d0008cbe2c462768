"""A small page that watches one topic from a browser, for trying Lookout
out and for the browser tests: ``/watch/?token=&topic=&transport=sse|ws``.

The page itself needs no credentials; its script uses the token from the
URL to ask for watch tickets. With ``&auth=session`` it relies on the
Django session cookie instead, which lets the browser's own EventSource
reconnect (with ``Last-Event-ID``) carry credentials.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import login
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views import View

from api.errors import error_body

from . import conf
from .auth import user_for_token

__all__ = ["WatchPageView"]


def may_log_in_from_page() -> bool:
    return bool(settings.DEBUG or conf.get("WATCH_PAGE_LOGIN"))


class WatchPageView(View):
    """``GET /watch/``: the watch page."""

    def get(self, request: HttpRequest) -> HttpResponse:
        token = request.GET.get("token")
        if token and request.GET.get("auth") == "session":
            return self.log_in(request, token)
        return render(request, "streams/watch.html")

    def log_in(self, request: HttpRequest, token: str) -> HttpResponse:
        """Log the token's user into the session, then show the page
        without the token in its address.

        A development convenience: a token in a URL ends up in histories
        and logs, so this is refused unless DEBUG or
        ``STREAMS["WATCH_PAGE_LOGIN"]`` is on.
        """
        if not may_log_in_from_page():
            message = (
                "logging in from the watch page is off; "
                'turn on DEBUG or STREAMS["WATCH_PAGE_LOGIN"]'
            )
            return JsonResponse(error_body("forbidden", message), status=403)
        user = user_for_token(token)
        if user is None or not user.is_active:
            message = "the token is not valid"
            return JsonResponse(error_body("not_authenticated", message), status=401)
        login(request, user)
        query = request.GET.copy()
        del query["token"]
        return redirect(f"{request.path}?{query.urlencode()}")
