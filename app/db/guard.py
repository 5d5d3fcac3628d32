"""Refuse to write to a database that is not the API's: MLflow's, or another Alembic project's."""

from __future__ import annotations

from collections.abc import Collection

import sqlalchemy as sa

from app.errors import ForeignDatabaseError

# Tables every MLflow tracking schema has had since its first release; newer releases only add to them.
MLFLOW_SIGNATURE = frozenset({"experiments", "runs", "metrics", "params"})
VERSION_TABLE = "alembic_version"

_TABLES = sa.text(
    "SELECT table_name FROM information_schema.tables "
    "WHERE table_schema = current_schema() AND table_name = ANY(:names)"
)


def check_database_is_ours(connection: sa.Connection, known_revisions: Collection[str]) -> None:
    """Raise ForeignDatabaseError unless the connected database may hold the API's schema."""
    database = connection.execute(sa.text("SELECT current_database()")).scalar_one()
    names = [*MLFLOW_SIGNATURE, VERSION_TABLE]
    present = set(connection.execute(_TABLES, {"names": names}).scalars())
    if present >= MLFLOW_SIGNATURE:
        raise ForeignDatabaseError(
            f"database '{database}' holds MLflow's tracking tables; nothing was changed. "
            "Set API_DB_NAME to the API's own database (not POSTGRES_DB)"
        )
    if VERSION_TABLE in present:
        stored = connection.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
        foreign = sorted(set(stored) - set(known_revisions))
        if foreign:
            raise ForeignDatabaseError(
                f"database '{database}' is at Alembic revision {', '.join(foreign)}, which is not one of this "
                "project's migrations; nothing was changed. Set API_DB_NAME to the API's own database, "
                "or check out the code that wrote that revision"
            )
