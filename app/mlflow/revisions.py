"""MLflow's own Alembic revisions (they ship in its package), run by us: one at a time, on a connection we hold.

`mlflow db upgrade` runs every pending revision through MLflow's env.py, which opens a connection of its own (a lock
or statement time-out set on ours would not reach it). Here each revision runs on our connection, configured the way
MLflow's env.py configures its context, so our time-outs, our lock and our transaction hold, and each revision can be
timed and named when it fails.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory

from app.mlflow.store import require_mlflow


@dataclass(frozen=True)
class MlflowScripts:
    """The revision scripts of the installed MLflow, with the Alembic configuration that reads them."""

    config: Config
    script: ScriptDirectory

    @property
    def head(self) -> str:
        return str(self.script.get_current_head())

    def pending(self, current: str | None) -> list[Script]:
        """The revisions after `current` up to head, oldest first."""
        return list(reversed(list(self.script.iterate_revisions(self.head, current))))

    def knows(self, revision: str) -> bool:
        try:
            return self.script.get_revision(revision) is not None
        except Exception:  # alembic's ResolutionError family: not one of this MLflow's revisions
            return False


def mlflow_scripts(url: str = "postgresql+psycopg://") -> MlflowScripts:
    """The installed MLflow's revisions; `url` only gives offline rendering its dialect."""
    require_mlflow()
    from mlflow.store.db.utils import _get_alembic_config

    config = cast(Config, _get_alembic_config(url))  # type: ignore[no-untyped-call]
    return MlflowScripts(config, ScriptDirectory.from_config(config))


def current_revision(connection: sa.Connection) -> str | None:
    """The store's revision, as MLflow reads it (its alembic_version, on the connection's search_path)."""
    return MigrationContext.configure(connection).get_current_revision()


@dataclass(frozen=True)
class RenderedSql:
    """A revision's SQL as offline mode renders it; `needs_live_data` says why it stopped short, if it did."""

    sql: str
    needs_live_data: str | None


def render_sql(scripts: MlflowScripts, parent: str | None, revision: str) -> RenderedSql:
    """The SQL of one revision (`alembic upgrade parent:revision --sql`). Revisions that read rows or reflect tables
    cannot be rendered offline: what came before the failure, and why it stopped."""
    config = scripts.config
    buffer = config.output_buffer = io.StringIO()
    try:
        command.upgrade(config, f"{parent}:{revision}" if parent else revision, sql=True)
    except Exception as exc:  # offline mode fails inside MLflow's own revision code, with whatever it raises
        said = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        return RenderedSql(buffer.getvalue(), f"{type(exc).__name__}: {said}".rstrip(": "))
    return RenderedSql(buffer.getvalue(), None)


def apply_revision(connection: sa.Connection, scripts: MlflowScripts, revision: str) -> None:
    """Apply one revision (its parent must be the store's revision) in the caller's transaction."""
    require_mlflow()
    from mlflow.store.db.base_sql_model import Base

    script = scripts.script

    def steps(rev: Any, context: Any) -> Any:
        return script._upgrade_revs(revision, rev)  # what `alembic upgrade` hands env.py

    with EnvironmentContext(scripts.config, script, fn=steps, destination_rev=revision) as context:
        # As MLflow's env.py configures its context, on our connection: the transaction open on it is ours, so
        # Alembic neither begins nor commits one.
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
