"""Names in the database's catalog: quoted one way, and asked about one way, everywhere."""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

_EXISTING = sa.text(
    "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = ANY(:n)"
)


def quote_ident(name: str) -> str:
    """Quote an SQL identifier such as a database name."""
    return '"' + name.replace('"', '""') + '"'


def current_database(connection: sa.Connection) -> str:
    """The name of the connected database."""
    return str(connection.execute(sa.text("SELECT current_database()")).scalar_one())


def current_schema(connection: sa.Connection) -> str:
    """The schema unqualified names are created in: API_DB_SCHEMA when set, else the server's default."""
    schema = connection.execute(sa.text("SELECT current_schema()")).scalar()
    if schema is None:
        raise LookupError("no schema on the search_path exists")
    return str(schema)


def existing_tables(connection: sa.Connection, names: Iterable[str]) -> list[str]:
    """Those of `names` that exist as tables in the current schema."""
    return list(connection.execute(_EXISTING, {"n": list(names)}).scalars())


def table_exists(connection: sa.Connection, name: str) -> bool:
    """True when table `name` exists in the current schema."""
    return bool(existing_tables(connection, [name]))
