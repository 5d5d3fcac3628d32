"""Alembic, driven from Python: its configuration, the revisions on disk, and the database's revision."""

from __future__ import annotations

import logging
import sys
from collections.abc import Collection
from functools import cached_property
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.config import Config
from alembic.script import ScriptDirectory

from app.db.catalog import table_exists
from app.errors import SetupError
from app.migrations.phases import Phase, phase_of
from app.settings import PROJECT_ROOT, Settings

ALEMBIC_INI = PROJECT_ROOT / "alembic.ini"
VERSIONS_DIR = PROJECT_ROOT / "alembic" / "versions"
VERSION_TABLE = "alembic_version"


class MultipleHeadsError(SetupError):
    """Two branches of the migrations each added a revision, and nothing merged them yet."""


def alembic_config(settings: Settings, *, configure_logging: bool = True) -> Config:
    """An Alembic `Config` whose env.py uses `settings` instead of reading its own."""
    # This process's stdout as it is now: Alembic's default is the one at import time, which ignores a redirection.
    config = Config(str(ALEMBIC_INI), stdout=sys.stdout)
    config.attributes["settings"] = settings
    config.attributes["configure_logging"] = configure_logging
    return config


class Revisions:
    """The migration scripts in this checkout."""

    def __init__(self, config: Config) -> None:
        self.config = config

    @cached_property
    def script(self) -> ScriptDirectory:
        return ScriptDirectory.from_config(self.config)

    @cached_property
    def known(self) -> frozenset[str]:
        return frozenset(rev.revision for rev in self.script.walk_revisions())

    @cached_property
    def heads(self) -> frozenset[str]:
        """The newest revision, as a set (empty with no revisions); see `require_one_head`."""
        self.require_one_head()
        return frozenset(self.script.get_heads())

    @cached_property
    def phases(self) -> dict[str, Phase]:
        """Each revision's phase: expand, or contract (see `phases.py`)."""
        return {rev.revision: phase_of(rev) for rev in self.script.walk_revisions()}

    @cached_property
    def upgrade_order(self) -> list[str]:
        """Every revision, oldest first: the order `upgrade` applies them in."""
        return [rev.revision for rev in reversed(list(self.script.walk_revisions()))]

    def ancestry(self, revisions: Collection[str]) -> frozenset[str]:
        """`revisions` and every revision they build on."""
        if not revisions:
            return frozenset()
        return frozenset(rev.revision for rev in self.script.iterate_revisions(tuple(revisions), "base"))

    def require_one_head(self) -> None:
        """Raise MultipleHeadsError when two branches each added a revision and nothing merged them yet."""
        heads = sorted(self.script.get_heads())
        if len(heads) < 2:
            return
        files = ", ".join(f"{rev.revision} ({Path(rev.path).name})" for rev in self.script.get_revisions(heads))
        raise MultipleHeadsError(
            f"the migrations have {len(heads)} heads, {files}: two branches each added a revision. Merge them "
            f'with `uv run alembic merge -m "Merge {" and ".join(heads)}" {" ".join(heads)}`, then run `just migrate`'
        )


def database_revisions(connection: sa.Connection) -> frozenset[str]:
    """The revisions the connected database is stamped with (empty before the first migration)."""
    if not table_exists(connection, VERSION_TABLE):
        return frozenset()
    return frozenset(connection.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())


class _StderrAtEmit(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is when a line is logged, not to the one it was created with."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # a redirected or swapped stderr (pytest swaps it per test) is found at emit time instead


def show_migration_steps(formatter: logging.Formatter | None = None) -> None:
    """Print Alembic's "Running upgrade a -> b" lines, the progress a person wants, and none of its other chatter.

    `formatter` shapes them as the rest of the output (the service's JSON lines); by default they are indented text.
    """
    logger = logging.getLogger("alembic.runtime.migration")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if any(handler.get_name() == "migration-steps" for handler in logger.handlers):
        return
    handler = _StderrAtEmit()
    handler.set_name("migration-steps")
    handler.setFormatter(formatter or logging.Formatter("  %(message)s"))
    handler.addFilter(lambda record: record.getMessage().startswith("Running "))
    logger.addHandler(handler)
