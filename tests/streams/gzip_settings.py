"""Lookout's settings with Django's GZipMiddleware outermost, as a project
that compresses its responses would install it: for a server that checks
that SSE streams still get through event by event."""

from project.settings import *  # noqa: F403
from project.settings import MIDDLEWARE

MIDDLEWARE = ["django.middleware.gzip.GZipMiddleware", *MIDDLEWARE]
