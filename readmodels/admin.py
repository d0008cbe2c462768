"""Admin for the read side: projection checkpoints (read-only, to see a
stopped projection and its error) and the change log."""

from __future__ import annotations

from django.contrib import admin

from events.admin import ReadOnlyAdmin

from .models import Change, Checkpoint


@admin.register(Checkpoint)
class CheckpointAdmin(ReadOnlyAdmin):
    list_display = (
        "name",
        "position",
        "state",
        "failed_position",
        "owner",
        "updated_at",
    )
    list_filter = ("state",)
    readonly_fields = (
        "name",
        "position",
        "state",
        "failed_position",
        "last_error",
        "skipped_positions",
        "owner",
        "lease_until",
        "updated_at",
    )


@admin.register(Change)
class ChangeAdmin(ReadOnlyAdmin):
    list_display = ("topic", "version", "position", "created_at", "sent_at")
    search_fields = ("=topic",)
    ordering = ("-id",)
