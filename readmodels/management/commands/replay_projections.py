"""Rebuild read models from the event store."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from events.store import head_position
from readmodels.projector import INLINE_PROJECTIONS, projection_named, replay


class Command(BaseCommand):
    help = (
        "Rebuild projections from every stored event, in position order. "
        "Names the projections to rebuild; all of them when none is named."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("names", nargs="*", metavar="NAME")
        parser.add_argument("--batch-size", type=int, default=2000)
        parser.add_argument(
            "--no-progress", action="store_true", help="hide the progress bar"
        )

    def handle(self, *args, names: list[str], batch_size: int, **options) -> None:
        try:
            projections = [projection_named(n) for n in names] or INLINE_PROJECTIONS
        except KeyError as exc:
            raise CommandError(exc.args[0]) from exc

        for projection in projections:
            bar = tqdm(
                total=head_position(),
                unit="pos",
                unit_scale=True,
                desc=projection.name,
                disable=options["no_progress"],
                file=self.stderr._out,
            )

            def progress(position: int, head: int, bar: tqdm = bar) -> None:
                bar.total = head
                bar.update(position - bar.n)

            applied = replay(projection, batch_size=batch_size, progress=progress)
            bar.close()
            self.stdout.write(
                f"projection {projection.name}: {applied} events replayed"
            )
