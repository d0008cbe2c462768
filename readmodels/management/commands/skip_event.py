"""Let a stopped projection go on past the event it could not apply."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from readmodels.models import Checkpoint


class Command(BaseCommand):
    help = (
        "Skip the event that stopped PROJECTION (see projection_status) and "
        "let it run again. The skip is recorded on the checkpoint."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("projection")
        parser.add_argument(
            "--position",
            type=int,
            required=True,
            help="the failed position, as a check that the right event is skipped",
        )

    def handle(self, *args, projection: str, position: int, **options) -> None:
        with transaction.atomic():
            row = Checkpoint.objects.select_for_update().filter(name=projection).first()
            if row is None:
                known = ", ".join(Checkpoint.objects.values_list("name", flat=True))
                raise CommandError(
                    f"no projection named {projection!r} has a checkpoint; "
                    f"known: {known or 'none'}"
                )
            if row.state != Checkpoint.FAILED:
                raise CommandError(f"projection {projection} is not stopped")
            if row.failed_position != position:
                raise CommandError(
                    f"projection {projection} stopped at position "
                    f"{row.failed_position}, not {position}"
                )
            row.skipped_positions = [
                *row.skipped_positions,
                {
                    "position": position,
                    "error": row.last_error,
                    "skipped_at": timezone.now().isoformat(),
                },
            ]
            row.position = position
            row.state = Checkpoint.RUNNING
            row.failed_position = None
            row.last_error = ""
            row.save()
        self.stdout.write(f"projection {projection} skips position {position}")
