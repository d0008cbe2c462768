"""Print each asynchronous projection's position, lag, state and error."""

from __future__ import annotations

from django.core.management.base import BaseCommand
from django.utils import timezone

from events.models import StoredEvent
from events.store import head_position
from readmodels.models import Checkpoint
from readmodels.projector import ASYNC_PROJECTIONS


class Command(BaseCommand):
    help = "Show how far each asynchronous projection has applied the store."

    def handle(self, *args, **options) -> None:
        head = head_position()
        self.stdout.write(f"head position {head}")
        rows = {row.name: row for row in Checkpoint.objects.all()}
        names = [p.name for p in ASYNC_PROJECTIONS]
        names += sorted(set(rows) - set(names))
        for name in names:
            row = rows.get(name)
            position = row.position if row else 0
            behind = StoredEvent.objects.filter(position__gt=position)
            lag_events = behind.count()
            oldest = behind.order_by("position").values_list("recorded_at", flat=True)
            first = next(iter(oldest[:1]), None)
            lag_secs = (timezone.now() - first).total_seconds() if first else 0.0
            state = row.state if row else "not started"
            self.stdout.write(
                f"{name}: position {position}, lag {lag_events} events "
                f"/ {lag_secs:.1f} s, {state}, owner {(row and row.owner) or '-'}"
            )
            if row and row.state == Checkpoint.FAILED:
                self.stdout.write(
                    f"  stopped at position {row.failed_position}: {row.last_error}"
                )
            if row and row.skipped_positions:
                skipped = ", ".join(str(s["position"]) for s in row.skipped_positions)
                self.stdout.write(f"  skipped positions: {skipped}")
