"""Refuse to write to a database that is not the API's: MLflow's, or another Alembic project's."""

from __future__ import annotations

from collections.abc import Collection

import sqlalchemy as sa

from app.db.catalog import current_database, table_exists
from app.errors import ForeignDatabaseError

# Tables every MLflow tracking schema has had since its first release; newer releases only add to them.
MLFLOW_SIGNATURE = frozenset({"experiments", "runs", "metrics", "params"})
VERSION_TABLE = "alembic_version"

# Every schema of the database, not only the API's: MLflow may sit in any of them (`-csearch_path=tracking`).
_MLFLOW_SCHEMAS = sa.text(
    "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p') AND c.relname = ANY(:names) "
    "GROUP BY n.nspname HAVING count(DISTINCT c.relname) = :n ORDER BY 1"
)


def mlflow_schemas(connection: sa.Connection) -> list[str]:
    """The schemas of the connected database that hold MLflow's tracking tables."""
    found = connection.execute(_MLFLOW_SCHEMAS, {"names": sorted(MLFLOW_SIGNATURE), "n": len(MLFLOW_SIGNATURE)})
    return list(found.scalars())


def check_database_is_ours(connection: sa.Connection, known_revisions: Collection[str], api_schema: str | None) -> None:
    """Raise ForeignDatabaseError unless the connected database may hold the API's tables.

    With no `api_schema` (API_DB_SCHEMA) the API shares its schema with whatever the database holds: MLflow's tables
    in any schema refuse it. With one, MLflow may have other schemas of the same database, never that one.
    """
    database = current_database(connection)
    mlflow = mlflow_schemas(connection)
    if mlflow and api_schema is None:
        raise ForeignDatabaseError(
            f"database '{database}' holds MLflow's tracking tables (schema {', '.join(mlflow)}); nothing was "
            "changed. Set API_DB_NAME to the API's own database (not POSTGRES_DB), or API_DB_SCHEMA to a schema "
            "of the API's own"
        )
    if api_schema in mlflow:
        raise ForeignDatabaseError(
            f"API_DB_SCHEMA '{api_schema}' of database '{database}' holds MLflow's tracking tables; nothing was "
            "changed. Set API_DB_SCHEMA to a schema of the API's own"
        )
    if table_exists(connection, VERSION_TABLE):
        stored = connection.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
        foreign = sorted(set(stored) - set(known_revisions))
        if foreign:
            raise ForeignDatabaseError(
                f"database '{database}' is at Alembic revision {', '.join(foreign)}, which is not one of this "
                "project's migrations; nothing was changed. Set API_DB_NAME to the API's own database, "
                "or check out the code that wrote that revision"
            )
