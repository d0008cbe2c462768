"""Rebuild read models from the event store, beside the live ones.

Each projection is folded from every event into new tables while commands
go on, then switched in within one short transaction (see
``readmodels.rebuild``). The bar counts positions of the store, so its
rate is events per second and its estimate the time left.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from events.scan import PAGE_SIZE
from events.store import head_position
from readmodels.projector import ASYNC_PROJECTIONS, INLINE_PROJECTIONS, projection_named
from readmodels.rebuild import RebuildFailed, rebuild


class Command(BaseCommand):
    help = (
        "Rebuild projections from every stored event into new tables, then "
        "switch them in. Names the projections to rebuild; the inline ones "
        "when none is named."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("names", nargs="*", metavar="NAME")
        parser.add_argument("--batch-size", type=int, default=PAGE_SIZE)
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
                unit="ev",
                unit_scale=True,
                desc=projection.name,
                disable=options["no_progress"],
                file=self.stderr._out,
            )

            def progress(position: int, head: int, bar: tqdm = bar) -> None:
                bar.total = head
                bar.update(position - bar.n)

            try:
                result = rebuild(
                    projection,
                    page_size=batch_size,
                    progress=progress,
                    asynchronous=projection in ASYNC_PROJECTIONS,
                )
            except RebuildFailed as exc:
                raise CommandError(
                    f"{exc}; the live read model is unchanged. Fix the "
                    "projection, or the event's upcaster, and replay again."
                ) from exc
            finally:
                bar.close()
            self.stdout.write(
                f"projection {projection.name}: {result.events} events replayed "
                f"to position {result.position}; the switch held the store "
                f"for {result.switch_ms:.0f} ms; "
                f"{len(result.reset_topics)} topics differed and were reset"
            )
