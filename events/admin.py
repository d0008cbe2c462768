"""Read-only admin for the event store: inspect, filter, search; never
edit."""

from __future__ import annotations

import json

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html

from .models import CommandRecord, StoredEvent


def _pretty(value: object) -> str:
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    return format_html("<pre>{}</pre>", text)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(StoredEvent)
class StoredEventAdmin(ReadOnlyAdmin):
    list_display = (
        "position",
        "stream_type",
        "stream_id",
        "stream_version",
        "type",
        "recorded_at",
    )
    list_filter = ("stream_type", "type", "recorded_at")
    search_fields = ("=stream_id",)
    date_hierarchy = "recorded_at"
    ordering = ("-position",)
    fields = (
        "position",
        "event_id",
        "stream_type",
        "stream_id",
        "stream_version",
        "type",
        "recorded_at",
        "data_json",
        "metadata_json",
    )
    readonly_fields = fields

    @admin.display(description="data")
    def data_json(self, event: StoredEvent) -> str:
        return _pretty(event.data)

    @admin.display(description="metadata")
    def metadata_json(self, event: StoredEvent) -> str:
        return _pretty(event.metadata)


@admin.register(CommandRecord)
class CommandRecordAdmin(ReadOnlyAdmin):
    list_display = ("actor", "key", "status", "created_at")
    search_fields = ("=key", "=actor")
