"""Rebuilding a projection from the whole store, beside the live tables.

The rebuild never blocks commands for long and never shows a half-built
read model:

1. Each of the projection's tables gets a new, empty twin with the same
   columns (``ShadowTable``).
2. The projection's fold runs over every event up to the head in memory,
   reading the store page by page (``events.scan``), and the rows are
   written into the twins in chunks. Commands go on meanwhile; the live
   tables keep serving readers and watchers.
3. Catch-up rounds fold the events appended since, until few are left.
4. The switch, in one transaction that holds the store's write lock:
   fold the last events, compare the twins with the live tables, drop the
   live tables and rename the twins into their place. Readers see the old
   rows until it commits, then the rebuilt ones.

Nothing is published while rebuilding. A topic whose rebuilt rows differ
from the live ones (a projection whose code changed, a row edited by
hand) moves to a new version above both, loses its change history, and
its watchers are told ``reset`` with reason ``rebuilt`` once the switch
commits: they fetch the resource again, as after any reset.

The switch compares only the rows that differed when the whole tables
were compared just before it, and the rows the last events touched: a
row that changes live changes because of an event, and the rebuild folds
the same event into the same row.

Limits: the fold holds every row of the projection in memory (about a
kilobyte per order); on SQLite the live tables' secondary indexes are
built again inside the switch, since SQLite cannot rename an index; a
row edited by hand (not by an event) after that last full comparison is
replaced without a reset.
"""

from __future__ import annotations

import gc
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from django.db import DEFAULT_DB_ALIAS, connection, connections, models, transaction

from events.scan import PAGE_SIZE, scan
from events.store import head_position, lock_store_for_append

from .columns import preparer
from .models import Change, Checkpoint, Topic
from .topics import announce_resets

__all__ = ["RebuildFailed", "RebuildResult", "ShadowTable", "rebuild"]

logger = logging.getLogger(__name__)

# Rows per INSERT batch and per transaction while filling the twins, so
# that commands on SQLite's single writer wait for one chunk at most.
WRITE_CHUNK = 2000
# Switch once no more than this many events are left to fold.
SWITCH_WITHIN_EVENTS = 2000
CATCH_UP_ROUNDS = 10
REBUILT = "rebuilt"
# Keys per query when the switch compares chosen rows.
KEYS_PER_QUERY = 500
# Past this many chosen rows the switch compares whole tables: one pass
# over each is quicker than many lookups by key.
WHOLE_TABLE_ABOVE = 5000
# The column of a read-model row that holds its topic's version.
VERSION_COLUMN = "version"
# Topics named one by one in the log when a rebuild resets them.
LOG_TOPICS = 20

Progress = Callable[[int, int], None]


class RebuildFailed(Exception):
    """The fold could not apply an event; the live tables are untouched."""


class Builder(Protocol):
    """A projection's fold over rows held in memory."""

    def apply_batch(self, events: list) -> None: ...

    def take_rows(self) -> dict[type[models.Model], list[models.Model]]: ...


@dataclass
class RebuildResult:
    events: int = 0
    position: int = 0
    reset_topics: dict[str, int] = field(default_factory=dict)
    switch_ms: float = 0.0
    # Seconds spent reading the store, folding, and writing the new tables.
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            spent = time.perf_counter() - started
            self.seconds[phase] = self.seconds.get(phase, 0.0) + spent


def rebuild(
    projection: Any,
    page_size: int = PAGE_SIZE,
    progress: Progress | None = None,
    asynchronous: bool = False,
) -> RebuildResult:
    """Rebuild ``projection`` into new tables and switch them in.

    ``asynchronous`` projections also have their checkpoint moved to the
    position the rebuild reached, in the switch's transaction; events an
    operator skipped stay skipped.
    """
    started = time.monotonic()
    builder: Builder = projection.builder()
    suffix = uuid.uuid4().hex[:8]
    shadows = [ShadowTable(model, suffix) for model in projection.models]
    skipped = _skipped_positions(projection.name) if asynchronous else set()
    result = RebuildResult()

    def fold_to(head: int) -> None:
        with result.timed("read"):
            pages = iter(scan(result.position, head, page_size))
        while True:
            with result.timed("read"):
                events = next(pages, None)
            if events is None:
                break
            page_end = events[-1].position
            if skipped:
                events = [e for e in events if e.position not in skipped]
            with result.timed("fold"):
                try:
                    builder.apply_batch(events)
                except Exception as exc:
                    raise RebuildFailed(
                        f"{projection.name} could not apply the events at "
                        f"positions {events[0].position} to {page_end}: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
            result.events += len(events)
            result.position = page_end
            if progress:
                progress(result.position, head)
        result.position = max(result.position, head)

    switched = False
    # The fold holds a row per order: with the cyclic collector on, each of
    # its passes walks all of them, and reading slows to a crawl. Nothing
    # here makes cycles worth collecting.
    collecting = gc.isenabled()
    gc.disable()
    try:
        for shadow in shadows:
            shadow.create()
        fold_to(head_position())
        _write(builder, shadows, result)
        with result.timed("index"):
            for shadow in shadows:
                shadow.add_keys_and_indexes()

        for _ in range(CATCH_UP_ROUNDS):
            head = head_position()
            if head - result.position <= SWITCH_WITHIN_EVENTS:
                break
            fold_to(head)
            _write(builder, shadows, result)

        # Compare the whole tables now, while commands go on; the switch
        # then compares only the rows found different here and the rows
        # that the last events touched (the same rows, live and rebuilt).
        with result.timed("compare"):
            for shadow in shadows:
                shadow.start_comparing()

        with transaction.atomic():
            switch_started = time.monotonic()
            lock_store_for_append()
            checkpoint = None
            if asynchronous:
                checkpoint, _ = Checkpoint.objects.select_for_update().get_or_create(
                    name=projection.name
                )
            fold_to(head_position())
            _write(builder, shadows, result)
            result.reset_topics = _restamp_changed_topics(projection, builder, shadows)
            for shadow in shadows:
                shadow.switch()
            if checkpoint is not None:
                checkpoint.position = result.position
                checkpoint.state = Checkpoint.RUNNING
                checkpoint.last_error = ""
                checkpoint.failed_position = None
                checkpoint.save()
            resets = dict(result.reset_topics)
            transaction.on_commit(lambda: announce_resets(resets, REBUILT))
            result.switch_ms = (time.monotonic() - switch_started) * 1000
        switched = True
    finally:
        # Free the fold's rows by their reference counts while the
        # collector is still off; once on, it would walk every one of
        # them, generation after generation.
        builder = None
        if collecting:
            gc.enable()
        if not switched:
            for shadow in shadows:
                shadow.drop()

    logger.info(
        "projection %s rebuilt to position %d: %d events in %d ms, "
        "switch held the store for %d ms, %d topics reset",
        projection.name,
        result.position,
        result.events,
        (time.monotonic() - started) * 1000,
        result.switch_ms,
        len(result.reset_topics),
    )
    return result


def _skipped_positions(name: str) -> set[int]:
    row = Checkpoint.objects.filter(name=name).first()
    # Each skip is recorded as {"position", "error", "skipped_at"}.
    return {skip["position"] for skip in row.skipped_positions} if row else set()


def _write(builder: Builder, shadows: list[ShadowTable], result: RebuildResult) -> None:
    with result.timed("write"):
        rows = builder.take_rows()
        for shadow in shadows:
            shadow.write(rows.get(shadow.model, ()))


def _restamp_changed_topics(
    projection: Any, builder: Builder, shadows: list[ShadowTable]
) -> dict[str, int]:
    """Versions belong to the live topics, not to the fold: rebuilt rows
    whose content equals the live ones take the live version. A topic whose
    rows differ moves to a version above both, and loses its history: a
    watcher's copy at any older version no longer matches what REST
    serves."""
    topics: set[str] = set()
    wanted = getattr(projection, "topic_columns", {})
    for shadow in shadows:
        for row in shadow.differences(wanted.get(shadow.model)):
            topics.update(projection.changed_topics(shadow.model, row))
        shadow.take_live_versions()
    if not topics:
        return {}

    names = sorted(topics)
    live = _live_versions(names)
    counted = builder.publisher.versions
    versions = {
        topic: max(live.get(topic, 0), counted.get(topic, 0)) + 1 for topic in names
    }
    stamps: dict[type, list[tuple[int, Any]]] = {}
    for topic, version in versions.items():
        found = projection.topic_row(topic)
        if found is not None:
            model, key = found
            stamps.setdefault(model, []).append((version, key))
    for shadow in shadows:
        shadow.set_versions(stamps.get(shadow.model, []))
    _save_versions(versions)

    for topic in names[:LOG_TOPICS]:
        logger.warning(
            "topic %s differs after the rebuild of %s: now at version %d, "
            "watchers are reset",
            topic,
            projection.name,
            versions[topic],
        )
    if len(names) > LOG_TOPICS:
        logger.warning(
            "%d more topics of %s differ after its rebuild and are reset",
            len(names) - LOG_TOPICS,
            projection.name,
        )
    return versions


def _postgres() -> bool:
    return connection.vendor == "postgresql"


def _live_versions(names: list[str]) -> dict[str, int]:
    topics = Topic._meta.db_table
    with connection.cursor() as cursor:
        if _postgres():
            # One array parameter, however many topics: no statement to build.
            cursor.execute(
                f"SELECT name, version FROM {topics} WHERE name = ANY(%s)", [names]
            )
            return dict(cursor.fetchall())
        with _sqlite_stamps(cursor, {name: 0 for name in names}) as stamps:
            cursor.execute(
                f"SELECT topic.name, topic.version FROM {topics} AS topic "
                f"JOIN {stamps} AS stamp ON stamp.name = topic.name"
            )
            return dict(cursor.fetchall())


def _save_versions(versions: dict[str, int]) -> None:
    """Move topics to new versions and drop their change history."""
    topics, changes = Topic._meta.db_table, Change._meta.db_table
    with connection.cursor() as cursor:
        if _postgres():
            names = list(versions)
            cursor.execute(
                f"INSERT INTO {topics} (name, version) "
                "SELECT * FROM unnest(%s::varchar[], %s::bigint[]) "
                "ON CONFLICT (name) DO UPDATE SET version = EXCLUDED.version",
                [names, list(versions.values())],
            )
            cursor.execute(f"DELETE FROM {changes} WHERE topic = ANY(%s)", [names])
            return
        with _sqlite_stamps(cursor, versions) as stamps:
            # "WHERE true" tells SQLite's parser the ON CONFLICT is the upsert's.
            cursor.execute(
                f"INSERT INTO {topics} (name, version) "
                f"SELECT name, version FROM {stamps} WHERE true "
                "ON CONFLICT (name) DO UPDATE SET version = excluded.version"
            )
            cursor.execute(
                f"DELETE FROM {changes} WHERE topic IN (SELECT name FROM {stamps})"
            )


@contextmanager
def _sqlite_stamps(cursor: Any, versions: dict[str, int]) -> Iterator[str]:
    """A temporary SQLite table of ``(name, version)`` rows, for statements
    about many topics at once: SQLite has no array parameter, and a
    statement per few hundred topics was most of a big switch."""
    table = "temp.lookout_rebuild_stamp"
    cursor.execute(f"CREATE TABLE {table} (name TEXT PRIMARY KEY, version INTEGER)")
    try:
        cursor.executemany(
            f"INSERT INTO {table} (name, version) VALUES (%s, %s)", versions.items()
        )
        yield table
    finally:
        cursor.execute(f"DROP TABLE {table}")


class ShadowTable:
    """A twin of a model's table, filled while the live one serves, then
    renamed into its place."""

    def __init__(self, model: type[models.Model], suffix: str) -> None:
        self.model = model
        self.live = model._meta.db_table
        self.name = f"{self.live}__rebuild_{suffix}"
        self.suffix = suffix
        self.fields = model._meta.concrete_fields
        self.pk_column = model._meta.pk.column
        self.written: set[Any] = set()
        # Once comparing has started: keys that differed then, and keys
        # written since.
        self.candidates_only = False
        self.candidates: set[Any] = set()
        self.written_since: set[Any] = set()
        # PostgreSQL: (temporary name, live name) of constraints and indexes.
        self.constraint_names: list[tuple[str, str]] = []
        self.index_names: list[tuple[str, str]] = []
        # SQLite: the live table's index statements, run after the rename.
        self.index_statements: list[str] = []

    @property
    def postgres(self) -> bool:
        return connection.vendor == "postgresql"

    def q(self, name: str) -> str:
        return connection.ops.quote_name(name)

    def create(self) -> None:
        with connection.cursor() as cursor:
            if self.postgres:
                # Columns, defaults and checks now; keys and indexes once
                # the rows are in, which loads faster.
                cursor.execute(
                    f"CREATE TABLE {self.q(self.name)} (LIKE {self.q(self.live)} "
                    "INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
                )
                return
            cursor.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = %s",
                [self.live],
            )
            (statement,) = cursor.fetchone()
            statement = re.sub(
                r'^CREATE TABLE\s+("[^"]+"|\S+)',
                f"CREATE TABLE {self.q(self.name)}",
                statement,
                count=1,
            )
            cursor.execute(statement)

    def add_keys_and_indexes(self) -> None:
        """Give the twin the live table's keys and indexes under names of
        its own; ``switch`` renames them. SQLite builds them at the switch."""
        with connection.cursor() as cursor:
            if not self.postgres:
                cursor.execute(
                    "SELECT sql FROM sqlite_master WHERE type = 'index' "
                    "AND tbl_name = %s AND sql IS NOT NULL",
                    [self.live],
                )
                self.index_statements = [sql for (sql,) in cursor.fetchall()]
                return

            cursor.execute(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = %s::regclass AND contype IN ('p', 'u')",
                [self.live],
            )
            constraints = cursor.fetchall()
            for name, definition in constraints:
                temporary = self._temporary_name(name)
                cursor.execute(
                    f"ALTER TABLE {self.q(self.name)} "
                    f"ADD CONSTRAINT {self.q(temporary)} {definition}"
                )
                self.constraint_names.append((temporary, name))

            cursor.execute(
                "SELECT indexname, indexdef FROM pg_indexes "
                "WHERE schemaname = current_schema() AND tablename = %s",
                [self.live],
            )
            taken = {name for _, name in self.constraint_names}
            for name, definition in cursor.fetchall():
                if name in taken:
                    continue
                temporary = self._temporary_name(name)
                cursor.execute(
                    re.sub(
                        r"^(CREATE (?:UNIQUE )?INDEX )\S+( ON (?:ONLY )?)\S+",
                        rf"\g<1>{self.q(temporary)}\g<2>{self.q(self.name)}",
                        definition,
                        count=1,
                    )
                )
                self.index_names.append((temporary, name))
            # Plans for the comparison need the twin's statistics.
            cursor.execute(f"ANALYZE {self.q(self.name)}")

    def _temporary_name(self, name: str) -> str:
        # Unique as the live name is, and within PostgreSQL's 63 bytes.
        return f"{name[:40]}_rb{self.suffix}"

    def write(self, rows: Iterable[models.Model]) -> None:
        """Insert rows, replacing any written before under the same key."""
        rows = list(rows)
        if not rows:
            return
        # The connection itself, not the thread-local proxy: each row's
        # values go through it a dozen times.
        database = connections[DEFAULT_DB_ALIAS]
        prepare = [(f.attname, preparer(f, database)) for f in self.fields]
        columns = ", ".join(self.q(f.column) for f in self.fields)
        marks = ", ".join(["%s"] * len(self.fields))
        insert = f"INSERT INTO {self.q(self.name)} ({columns}) VALUES ({marks})"
        for start in range(0, len(rows), WRITE_CHUNK):
            chunk = rows[start : start + WRITE_CHUNK]
            values = [
                [save(row.__dict__[name]) for name, save in prepare] for row in chunk
            ]
            again = [row.pk for row in chunk if row.pk in self.written]
            keys = ", ".join(["%s"] * len(again))
            with transaction.atomic(), database.cursor() as cursor:
                if again:
                    cursor.execute(
                        f"DELETE FROM {self.q(self.name)} WHERE "
                        f"{self.q(self.pk_column)} IN ({keys})",
                        again,
                    )
                if self.postgres:
                    # COPY: several times quicker than INSERTs for a bulk.
                    with cursor.cursor.copy(
                        f"COPY {self.q(self.name)} ({columns}) FROM STDIN"
                    ) as copy:
                        for row_values in values:
                            copy.write_row(row_values)
                else:
                    cursor.executemany(insert, values)
            self.written.update(row.pk for row in chunk)
            if self.candidates_only:
                self.written_since.update(row.pk for row in chunk)

    def set_versions(self, stamps: list[tuple[int, Any]]) -> None:
        """Set the ``version`` column of rows, as ``(version, key)`` pairs."""
        if not stamps:
            return
        with connection.cursor() as cursor:
            if self.postgres:
                key_type = self.model._meta.pk.db_type(connection)
                versions, keys = zip(*stamps, strict=True)
                cursor.execute(
                    f"UPDATE {self.q(self.name)} AS twin "
                    f"SET {self.q(VERSION_COLUMN)} = stamp.version "
                    f"FROM unnest(%s::bigint[], %s::{key_type}[]) "
                    "AS stamp(version, key) "
                    f"WHERE twin.{self.q(self.pk_column)} = stamp.key",
                    [list(versions), list(keys)],
                )
            else:
                cursor.executemany(
                    f"UPDATE {self.q(self.name)} SET {self.q(VERSION_COLUMN)} = %s "
                    f"WHERE {self.q(self.pk_column)} = %s",
                    stamps,
                )

    def start_comparing(self) -> None:
        """Align versions and note which rows differ, over the whole table;
        from now on the switch need only look at these and at rows written
        later."""
        keys = self.differences([self.pk_column])
        self.candidates = {row[self.pk_column] for row in keys}
        self.take_live_versions()
        self.candidates_only = True

    def differences(self, wanted: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Rows whose content, all but the ``version``, is found in only one
        of the twin and the live table: changed, added or gone. Each comes
        with the ``wanted`` columns only (all of them by default)."""
        found = []
        columns = ", ".join(
            self.q(f.column) for f in self.fields if f.column != VERSION_COLUMN
        )
        picked = ", ".join(self.q(c) for c in wanted) if wanted else "*"
        with connection.cursor() as cursor:
            for where, keys in self._key_filters():
                for first, second in ((self.live, self.name), (self.name, self.live)):
                    cursor.execute(
                        f"SELECT {picked} FROM (SELECT {columns} FROM "
                        f"{self.q(first)}{where} EXCEPT SELECT {columns} FROM "
                        f"{self.q(second)}{where}) AS differing",
                        keys + keys,
                    )
                    names = [column[0] for column in cursor.description]
                    found.extend(dict(zip(names, row, strict=True)) for row in cursor)
        return found

    def take_live_versions(self) -> None:
        """Give each twin row the version of the live row with its key."""
        if VERSION_COLUMN not in {f.column for f in self.fields}:
            return
        twin, live = self.q(self.name), self.q(self.live)
        key, version = self.q(self.pk_column), self.q(VERSION_COLUMN)
        with connection.cursor() as cursor:
            for where, keys in self._key_filters(twin):
                condition = where.replace(" WHERE ", " AND ") if where else ""
                cursor.execute(
                    f"UPDATE {twin} SET {version} = {live}.{version} FROM {live} "
                    f"WHERE {live}.{key} = {twin}.{key} "
                    f"AND {live}.{version} <> {twin}.{version}{condition}",
                    keys,
                )

    def _key_filters(self, table: str = "") -> Iterable[tuple[str, list]]:
        """``WHERE`` clauses, with their keys, that cover the rows to look
        at: every row, or the candidates in chunks."""
        if not self.candidates_only:
            yield "", []
            return
        column = (
            f"{table}.{self.q(self.pk_column)}" if table else self.q(self.pk_column)
        )
        keys = sorted(self.candidates | self.written_since)
        if len(keys) > WHOLE_TABLE_ABOVE:
            yield "", []
            return
        for start in range(0, len(keys), KEYS_PER_QUERY):
            chunk = keys[start : start + KEYS_PER_QUERY]
            marks = ", ".join(["%s"] * len(chunk))
            yield f" WHERE {column} IN ({marks})", chunk

    def switch(self) -> None:
        """Put the twin in the live table's place; call inside the switch's
        transaction."""
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE {self.q(self.live)}")
            cursor.execute(
                f"ALTER TABLE {self.q(self.name)} RENAME TO {self.q(self.live)}"
            )
            for temporary, name in self.constraint_names:
                cursor.execute(
                    f"ALTER TABLE {self.q(self.live)} "
                    f"RENAME CONSTRAINT {self.q(temporary)} TO {self.q(name)}"
                )
            for temporary, name in self.index_names:
                cursor.execute(
                    f"ALTER INDEX {self.q(temporary)} RENAME TO {self.q(name)}"
                )
            for statement in self.index_statements:
                cursor.execute(statement)

    def drop(self) -> None:
        """Remove the twin of a rebuild that failed before its switch."""
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"DROP TABLE IF EXISTS {self.q(self.name)}")
        except Exception:
            logger.exception("could not drop %s; drop it by hand", self.name)
