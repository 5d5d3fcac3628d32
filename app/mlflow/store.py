"""Where MLflow's tracking store is: MLflow's database (POSTGRES_DB) on the API's server, and the schema it uses."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, replace

import sqlalchemy as sa

from app.db.catalog import quote_ident
from app.db.server import ServerAddress, direct_address
from app.errors import SetupError
from app.migrations.guard import mlflow_schemas
from app.settings import Settings


def require_mlflow() -> None:
    """Fail with the way out when MLflow (the `mlflow` extra) is not installed in this environment."""
    if importlib.util.find_spec("mlflow.store") is None:
        raise SetupError(
            "MLflow is not installed in this environment: run `just mlflow-upgrade` (or `uv run --extra mlflow "
            "python -m app mlflow-upgrade`)"
        )


def mlflow_address(settings: Settings) -> ServerAddress:
    """The server holding MLflow's database: the API's, reached as MLflow's user when it is configured.

    The server itself, never PgBouncer: MLflow migrates its schema on start, and psycopg prepares named statements.
    """
    address = direct_address(settings)
    if settings.embedded:
        return address
    return replace(address, user=settings.postgres_user, password=settings.postgres_password.get_secret_value())


def backend_store_uri(address: ServerAddress, database: str) -> str:
    """MLflow's `--backend-store-uri`, without the password: libpq reads that from PGPASSWORD."""
    url = replace(address, password=None).url(database, driver="psycopg")
    return url.render_as_string(hide_password=False)


@dataclass(frozen=True)
class MlflowStore:
    """MLflow's tables: a schema of MLflow's database (its own database, or one shared with the API)."""

    address: ServerAddress
    database: str
    schema: str

    def url(self, database: str | None = None) -> sa.URL:
        """A psycopg URL on the store's schema (on another `database` with the same layout, for a copy)."""
        url = self.address.url(database or self.database, driver="psycopg")
        return url.update_query_dict({"options": f"-csearch_path={self.schema}"})

    def engine(self, database: str | None = None) -> sa.Engine:
        return sa.create_engine(self.url(database), poolclass=sa.NullPool, hide_parameters=True)

    def libpq_env(self, database: str | None = None) -> dict[str, str]:
        """The environment of pg_dump, pg_restore and psql on the store (or a copy of it)."""
        return {**os.environ, **self.address.libpq_env(database or self.database, self.schema)}

    @property
    def quoted_schema(self) -> str:
        return quote_ident(self.schema)

    def __str__(self) -> str:
        return f"schema '{self.schema}' of database '{self.database}'"


def locate_store(settings: Settings) -> MlflowStore | None:
    """MLflow's store, found by its tables in MLflow's database (POSTGRES_DB); None before MLflow made it.

    In a database shared with the API (API_DB_NAME = POSTGRES_DB), the schema that holds MLflow's tables, never the
    API's (API_DB_SCHEMA).
    """
    address = mlflow_address(settings)
    engine = sa.create_engine(address.url(settings.postgres_db, driver="psycopg"), poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            found = [schema for schema in mlflow_schemas(connection) if schema != settings.api_db_schema]
    except sa.exc.OperationalError as exc:
        if "does not exist" in str(exc.orig):
            return None
        raise SetupError(f"cannot reach MLflow's database '{settings.postgres_db}': {exc.orig}".strip()) from exc
    finally:
        engine.dispose()
    if len(found) > 1:
        raise SetupError(
            f"database '{settings.postgres_db}' holds MLflow's tables in several schemas ({', '.join(found)}); "
            "upgrade each with MLflow's own tools, or keep one store a database"
        )
    return MlflowStore(address, settings.postgres_db, found[0]) if found else None
