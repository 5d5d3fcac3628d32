"""Templates the test workers of one run build once and share: MLflow's migrations alone take seconds of CPU."""

from __future__ import annotations

import fcntl
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.databases import Databases


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (made when missing) against the other workers."""
    with path.open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def shared_template(pg: Databases, folder: Path | None, kind: str, build: Callable[[str], None]) -> Iterator[str]:
    """A database `build` fills, made by the first worker that asks and dropped by the last one done with it.

    `folder` is shared by the workers of this run (None: a run without workers, which keeps its own).
    """

    def made() -> str:
        name = pg.create(pg.new_name(kind))
        try:
            build(name)
        except BaseException:
            pg.drop(name)
            raise
        return name

    if folder is None:
        name = made()
        try:
            yield name
        finally:
            pg.drop(name)
        return
    state, lock = folder / f"{kind}.json", folder / f"{kind}.lock"
    with locked(lock):
        users: dict[str, Any] = json.loads(state.read_text()) if state.exists() else {"name": None, "count": 0}
        if users["name"] is None:
            users["name"] = made()
        users["count"] += 1
        state.write_text(json.dumps(users))
    shared: str = users["name"]
    try:
        yield shared
    finally:
        with locked(lock):
            users = json.loads(state.read_text())
            users["count"] -= 1
            if users["count"] == 0:
                pg.drop(users["name"])
                users["name"] = None
            state.write_text(json.dumps(users))
