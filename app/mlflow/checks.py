"""What the store looks like, and whether an upgrade left it right: MLflow's own check, the head's indexes, rows.

The fingerprint (schema and every row) tells "exactly as it was" from anything else.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import sqlalchemy as sa

from app.db.catalog import quote_ident
from app.db.pg_tools import first_error, pg_tool
from app.errors import SetupError
from app.mlflow.revisions import MlflowScripts, current_revision
from app.mlflow.store import MlflowStore, require_mlflow

# Revisions that delete rows on purpose, and the tables they shrink: MLflow 3's trace analytics move legacy tags
# and metadata into columns, then delete them.
SHRINKS = {"75868b020152": frozenset({"trace_tags", "trace_request_metadata", "trace_metrics", "span_metrics"})}
# Declared on MLflow's models but made by none of its revisions: no store MLflow migrates has it.
MODEL_ONLY_INDEXES = frozenset({"index_issues_created_by"})

_TABLES = sa.text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1")
_ROWS_DIGEST = "md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), ''))"
_SIZE = sa.text("SELECT pg_total_relation_size(format('%I.%I', current_schema(), CAST(:t AS text))::regclass)")
_INDEXES = sa.text(
    "SELECT i.relname AS name, t.relname AS table_name, array(SELECT a.attname "
    "FROM unnest(x.indkey[0:x.indnkeyatts - 1]) WITH ORDINALITY k(n, o) "
    "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.n ORDER BY k.o) AS columns "
    "FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid "
    "JOIN pg_namespace n ON n.oid = t.relnamespace WHERE n.nspname = current_schema()"
)


@dataclass(frozen=True)
class TableStats:
    rows: int
    bytes: int


def table_stats(connection: sa.Connection) -> dict[str, TableStats]:
    """Every table of the store: its exact row count and its size with indexes."""
    stats = {}
    for name in connection.execute(_TABLES).scalars():
        rows = connection.execute(sa.text(f"SELECT count(*) FROM {quote_ident(name)}")).scalar_one()
        stats[name] = TableStats(rows, connection.execute(_SIZE, {"t": name}).scalar_one())
    return stats


def head_metadata() -> sa.MetaData:
    """MLflow's models at the installed release's head: what its revisions build."""
    require_mlflow()
    import mlflow.store.jobs
    import mlflow.store.model_registry.dbmodels.models
    import mlflow.store.tracking.dbmodels.models  # noqa: F401
    from mlflow.store.db.base_sql_model import Base

    metadata: sa.MetaData = Base.metadata
    return metadata


def missing_indexes(connection: sa.Connection) -> list[str]:
    """The indexes MLflow's head models declare that the store lacks (or has on other columns)."""
    have = {row.name: (row.table_name, tuple(row.columns)) for row in connection.execute(_INDEXES)}
    missing = []
    for table in head_metadata().tables.values():
        for index in table.indexes:
            if index.name is None or index.name in MODEL_ONLY_INDEXES:
                continue
            columns = tuple(column.name for column in index.columns)
            # Named only, or on expressions: the name is what can be checked.
            plain = bool(columns) and len(columns) == len(index.expressions)
            found = have.get(str(index.name))
            if found is None or found[0] != table.name or (plain and found[1] != columns):
                missing.append(f"{index.name} on {table.name}({', '.join(columns) or '...'})")
    return missing


def mlflow_schema_check(engine: sa.Engine) -> str | None:
    """MLflow's own startup check of the schema (what its server runs): None when it passes, else what it says."""
    require_mlflow()
    from mlflow.exceptions import MlflowException
    from mlflow.store.db.utils import _verify_schema

    try:
        _verify_schema(engine)  # type: ignore[no-untyped-call]
    except MlflowException as exc:
        return str(exc.message)
    return None


def problems_after(
    connection: sa.Connection, scripts: MlflowScripts, before: Mapping[str, TableStats], applied: Iterable[str]
) -> list[str]:
    """What is wrong with the store after an upgrade: not at head, an index missing, rows that went or came."""
    problems = []
    if (revision := current_revision(connection)) != scripts.head:
        problems.append(f"the store is at {revision}, not at head {scripts.head}")
    problems += [f"index missing: {index}" for index in missing_indexes(connection)]
    may_shrink = frozenset().union(*(SHRINKS.get(revision, frozenset()) for revision in applied))
    after = table_stats(connection)
    for table, stats in before.items():
        if table not in after:
            problems.append(f"table {table} is gone")
        elif after[table].rows != stats.rows and table not in may_shrink:
            problems.append(f"table {table} held {stats.rows} rows, now {after[table].rows}")
    return problems


def fingerprint(store: MlflowStore, database: str | None = None) -> str:
    """The store's schema (as pg_dump writes it, without owners and privileges) and every row of every table, hashed."""
    dump = subprocess.run(
        [pg_tool("pg_dump"), "--schema-only", "--no-owner", "--no-privileges", f"--schema={store.schema}"],
        env=store.libpq_env(database),
        capture_output=True,
        check=False,
    )
    if dump.returncode != 0:
        raise SetupError(f"pg_dump of {store} failed: {first_error(dump.stderr, dump.returncode)}")
    digest = hashlib.sha256()
    for line in dump.stdout.decode().splitlines():
        # PostgreSQL 18's pg_dump writes a random \restrict key; a restore re-words CHECK constraints' casts.
        if line.strip() and not line.startswith(("--", "\\restrict", "\\unrestrict")):
            digest.update(check_in_plain_words(line).encode())
    engine = store.engine(database)
    try:
        with engine.connect() as connection:
            for table in connection.execute(_TABLES).scalars():
                rows = f"SELECT {_ROWS_DIGEST} FROM {quote_ident(table)} x"
                digest.update(f"{table}:{connection.execute(sa.text(rows)).scalar_one()}".encode())
    finally:
        engine.dispose()
    return digest.hexdigest()


def check_in_plain_words(line: str) -> str:
    """A CHECK constraint without casts and parentheses: `ANY ((ARRAY['a'::varchar])::text[])` comes back from a
    restore as `ANY (ARRAY[('a'::varchar)::text])`, the same constraint in other words."""
    if " CHECK " not in line:
        return line
    return re.sub(r"[()\s]", "", re.sub(r"::(character varying|text|integer|bigint|numeric)(\[\])?", "", line))
