"""A writer process for the torture test: appends to random streams, with
pauses inside its transactions, and tells what became of each append.

    python -m tests.readmodels.racing_writer SEED APPENDS STREAMS

The environment names the database (``DATABASE_URL`` or
``LOOKOUT_SQLITE_PATH``). The last line of stdout is JSON: how many appends
committed (counted in events), and how many appends rolled back or lost
a version race.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time

# Longest pause, between reading a stream's version and appending, and
# inside the append's transaction before it commits.
PAUSE_SECS = 0.01
ROLL_BACK_CHANCE = 0.2


class RolledBack(Exception):
    pass


def race(seed: int, appends: int, streams: int) -> dict[str, int]:
    from events.errors import VersionConflict
    from events.records import NewEvent
    from events.store import append_to_stream, stream_version, write_transaction

    chance = random.Random(seed)
    outcomes = {"committed": 0, "rolled_back": 0, "conflicts": 0}
    for n in range(appends):
        stream = f"torture-{chance.randrange(streams)}"
        events = [
            NewEvent("Hit", {"writer": seed, "n": n})
            for _ in range(chance.randint(1, 3))
        ]
        try:
            # The version is read before the transaction, so another writer
            # may move the stream on meanwhile: a version race.
            version = stream_version(stream)
            time.sleep(chance.random() * PAUSE_SECS)
            # As commands do: on SQLite, writers of one process take turns.
            with write_transaction():
                append_to_stream(stream, "thing", version, events)
                time.sleep(chance.random() * PAUSE_SECS)
                if chance.random() < ROLL_BACK_CHANCE:
                    raise RolledBack
            outcomes["committed"] += len(events)
        except RolledBack:
            outcomes["rolled_back"] += 1
        except VersionConflict:
            outcomes["conflicts"] += 1
    return outcomes


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()
    seed, appends, streams = (int(arg) for arg in sys.argv[1:4])
    print(json.dumps(race(seed, appends, streams)), flush=True)


if __name__ == "__main__":
    main()
