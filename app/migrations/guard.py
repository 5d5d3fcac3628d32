"""Refuse a database that is not the API's (MLflow's, another Alembic project's), and a schema this release's code
cannot run on."""

from __future__ import annotations

from collections.abc import Collection

import sqlalchemy as sa

from app.db.catalog import current_database
from app.errors import ForeignDatabaseError, SchemaNotAtHeadError
from app.migrations.lineage import SchemaState, schema_state, trace
from app.migrations.revisions import Revisions, database_revisions

# Tables every MLflow tracking schema has had since its first release; newer releases only add to them.
MLFLOW_SIGNATURE = frozenset({"experiments", "runs", "metrics", "params"})

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
    # A newer release's revisions are this project's too: the database recorded their lineage.
    foreign = trace(connection, database_revisions(connection), known_revisions).foreign
    if foreign:
        raise ForeignDatabaseError(
            f"database '{database}' is at Alembic revision {', '.join(foreign)}, which is not one of this "
            "project's migrations; nothing was changed. Set API_DB_NAME to the API's own database, "
            "or check out the code that wrote that revision"
        )


def require_compatible(connection: sa.Connection, revisions: Revisions, api_schema: str | None) -> SchemaState:
    """The database's state, when it is the API's and this release's code can run on it; else raise.

    It can at head, ahead through a newer release's expand revisions, and behind with only contract revisions of
    this release pending (they wait for the older instances to go).
    """
    check_database_is_ours(connection, revisions.known, api_schema)
    state = schema_state(connection, revisions)
    if problem := state.problem():
        shown = ", ".join(sorted(state.current)) or "no revision"
        raise SchemaNotAtHeadError(
            f"database '{current_database(connection)}' is at {shown}, not at the newest migration "
            f"({', '.join(sorted(state.heads))}); {problem}"
        )
    return state
