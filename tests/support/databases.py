"""Test databases on a real PostgreSQL: the embedded one by default, TEST_DATABASE_URL's server when set."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import sqlalchemy as sa
from alembic.config import Config
from alembic.script import ScriptDirectory

from app.db.catalog import quote_ident
from app.db.provision import connect
from app.db.server import ServerAddress, start_embedded
from app.errors import SetupError
from app.migrations.revisions import ALEMBIC_INI
from app.settings import PROJECT_ROOT, Settings

PREFIX = "bikerental_test"
# Argon2 at a test cost: the contract is the same, the suite stays fast.
FAST_HASHING = {"argon2_memory_kib": 1024, "argon2_time_cost": 1, "argon2_parallelism": 1}
# The newest of the project's revisions: what a migrated database is at.
HEAD = str(ScriptDirectory.from_config(Config(str(ALEMBIC_INI))).get_current_head())


# Every table the API's migrations make, its version table and its checksum table: what `reset` drops.
API_TABLES = {
    "alembic_checksums",
    "alembic_version",
    "roles",
    "users",
    "user_roles",
    "user_sessions",
    "refresh_tokens",
    "account_tokens",
    "api_instances",
}


# The older server the backups must restore on too: PostgreSQL 15 from Debian's packages (.ci/run starts it).
OLDER_SERVER_URL = os.environ.get("TEST_OLDER_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def server_for_tests(url: str | None = None) -> tuple[ServerAddress, dict[str, str]]:
    """The server the tests use (`url`'s, else TEST_DATABASE_URL's, else the embedded one) and its settings."""
    url = url or os.environ.get("TEST_DATABASE_URL")
    if not url:
        address = start_embedded(PROJECT_ROOT / ".data" / "postgres")
        return address, {"api_db_host": "", "embedded_db_dir": str(PROJECT_ROOT / ".data" / "postgres")}
    parsed = sa.make_url(url)
    address = ServerAddress(
        host=parsed.host or "localhost",
        port=parsed.port or 5432,
        user=parsed.username or "postgres",
        password=parsed.password,
    )
    return address, {
        "api_db_host": address.host,
        "api_db_port": str(address.port),
        "api_db_user": address.user,
        "api_db_password": address.password or "",
    }


@contextmanager
def another_transaction(pg: Databases, db: str) -> Iterator[sa.Connection]:
    """A transaction of another client, open until the block ends."""
    engine = sa.create_engine(pg.psycopg_url(db), poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


class Databases:
    """Creates, clones and drops the databases of one test session."""

    def __init__(self, url: str | None = None) -> None:
        self.address, self.fields = server_for_tests(url)
        # Backups the commands under test take before a change land here, never in the project's backups/.
        self.fields["backup_dir"] = tempfile.mkdtemp(prefix="bikerental-test-backups-")

    def settings(self, database: str, **overrides: object) -> Settings:
        # Tests sign up far more than a person would: the rate limit has tests of its own.
        values: dict[str, object] = {
            **self.fields,
            "api_db_name": database,
            "rate_limit_per_minute": 10**6,
            **overrides,
        }
        # model_validate skips the environment and `.env`: a test sees only what it sets.
        return Settings.model_validate(values)

    def env(self, database: str) -> dict[str, str]:
        """The environment a `python -m app` or `alembic` subprocess needs to use `database`."""
        fields = {
            "api_db_host": "",
            "api_db_name": database,
            "postgres_db": "mlflow",
            "rate_limit_per_minute": str(10**6),
            # A developer's `.env` may serve beyond loopback; the commands under test run on this machine.
            "api_host": "127.0.0.1",
            "environment": "development",
            **self.fields,
        }
        return {**os.environ, **{k.upper(): v for k, v in fields.items()}, "PYTHONPATH": str(PROJECT_ROOT)}

    def new_name(self, kind: str) -> str:
        return f"{PREFIX}_{kind}_{uuid.uuid4().hex[:10]}"

    async def _admin(self, *statements: str) -> None:
        conn = await connect(self.address, "postgres")
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    def create(self, name: str, template: str | None = None) -> str:
        clause = f" TEMPLATE {quote_ident(template)} STRATEGY FILE_COPY" if template else ""
        asyncio.run(self._admin(f"CREATE DATABASE {quote_ident(name)}{clause}"))
        return name

    def drop(self, name: str) -> None:
        asyncio.run(self._admin(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)"))

    @contextmanager
    def temporary(self, kind: str, template: str | None = None) -> Iterator[str]:
        """A new database (empty, or a copy of `template`) for the block, dropped after it."""
        name = self.create(self.new_name(kind), template=template)
        try:
            yield name
        finally:
            self.drop(name)

    async def fetch(self, database: str, query: str, *args: object) -> list[asyncpg.Record]:
        conn = await connect(self.address, database)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    def query(self, database: str, query: str, *args: object) -> list[asyncpg.Record]:
        return asyncio.run(self.fetch(database, query, *args))

    def add_user(self, database: str, username: str, *, roles: Sequence[str] = ()) -> int:
        """A user written straight into `database` (holding `roles`, which must exist); its id."""
        insert = "INSERT INTO users (username, email, hashed_password) VALUES ($1, $2, 'not a hash') RETURNING id"
        user_id: int = self.query(database, insert, username, f"{username}@example.com")[0][0]
        for role in roles:
            self.query(database, "INSERT INTO user_roles SELECT $1, id FROM roles WHERE name = $2", user_id, role)
        return user_id

    def psycopg_url(self, database: str) -> str:
        return self.address.url(database, driver="psycopg").render_as_string(hide_password=False)


def run_app(
    args: list[str], env: Mapping[str, str], *, cwd: Path = PROJECT_ROOT, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m app ARGS` as a user would, and capture what it says."""
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        env=dict(env),
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# What a test could change in a database besides rows: its schema objects, its settings and the migrations' own
# tables. Two databases with the same fingerprint look the same to the code under test.
FINGERPRINT = r"""
WITH spaces AS (
    SELECT oid, nspname FROM pg_namespace WHERE nspname !~ '^pg_' AND nspname <> 'information_schema'
), items(item) AS (
    SELECT format('schema %s %s', nspname, nspacl) FROM pg_namespace WHERE oid IN (SELECT oid FROM spaces)
    UNION ALL
    SELECT format('relation %s %s %s %s %s %s %s', c.oid::regclass, c.relkind, c.relpersistence,
                  c.relowner::regrole, c.relacl, c.relrowsecurity, c.relforcerowsecurity)
    FROM pg_class c JOIN spaces s ON s.oid = c.relnamespace
    UNION ALL
    SELECT format('column %s %s %s %s %s %s %s %s %s', a.attrelid::regclass, a.attname,
                  format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attidentity,
                  a.attgenerated, a.attcollation::regcollation, a.attacl)
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN spaces s ON s.oid = c.relnamespace
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT format('constraint %s %s %s', conrelid::regclass, conname, pg_get_constraintdef(c.oid))
    FROM pg_constraint c JOIN spaces s ON s.oid = c.connamespace
    UNION ALL
    SELECT format('index %s %s', pg_get_indexdef(i.indexrelid), i.indisvalid)
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN spaces s ON s.oid = c.relnamespace
    UNION ALL
    SELECT format('function %s %s %s', p.oid::regprocedure, md5(p.prosrc), p.proacl)
    FROM pg_proc p JOIN spaces s ON s.oid = p.pronamespace
    UNION ALL
    SELECT 'type ' || t.oid::regtype FROM pg_type t JOIN spaces s ON s.oid = t.typnamespace
    UNION ALL
    SELECT format('trigger %s %s', pg_get_triggerdef(oid), tgenabled) FROM pg_trigger WHERE NOT tgisinternal
    UNION ALL
    SELECT format('foreign key trigger %s %s', tgrelid::regclass, tgenabled) FROM pg_trigger WHERE tgisinternal
    UNION ALL
    SELECT format('policy %s %s %s %s %s', schemaname, tablename, policyname, qual, with_check) FROM pg_policies
    UNION ALL
    SELECT format('rule %s %s', schemaname, definition) FROM pg_rules WHERE schemaname !~ '^pg_'
    UNION ALL
    SELECT format('default privileges %s', defaclacl) FROM pg_default_acl
    UNION ALL
    SELECT 'event trigger ' || evtname FROM pg_event_trigger
    UNION ALL
    SELECT format('extension %s %s', extname, extversion) FROM pg_extension
    UNION ALL
    SELECT format('sequence %s.%s %s %s %s %s %s %s', schemaname, sequencename, start_value, increment_by,
                  min_value, max_value, cycle, last_value) FROM pg_sequences
    UNION ALL
    SELECT 'comment ' || description FROM pg_description WHERE objoid >= 16384
    UNION ALL
    SELECT format('database %s %s %s', datdba::regrole, datconnlimit, datallowconn) FROM pg_database
    WHERE datname = current_database()
    UNION ALL
    SELECT format('setting %s %s', setrole, setconfig) FROM pg_db_role_setting
    WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
    UNION ALL
    SELECT 'version ' || version_num FROM alembic_version
    UNION ALL
    SELECT 'checksum ' || c::text FROM alembic_checksums c
)
SELECT md5(string_agg(item, E'\n' ORDER BY item)) FROM items
"""

# The tables whose rows a test may leave behind; the migrations' own tables keep theirs.
DATA_TABLES = sorted(API_TABLES - {"alembic_version", "alembic_checksums"})


class ReusedDatabase:
    """One database of a test worker, copied from `template` once and emptied before each test that takes it.

    A copy per test costs a tenth of a second of the server's time; emptying the tables costs a fiftieth. A test
    that changed more than rows (a downgrade, a new table, a setting) leaves a different fingerprint behind, and the
    next test gets a new copy instead.
    """

    def __init__(self, pg: Databases, template: str) -> None:
        self.pg, self.template = pg, template
        self.name: str | None = None
        self.fingerprint = ""

    def take(self) -> str:
        """The database, under a new name, with no rows and no other session on it, as a fresh copy would be.

        The new name keeps whatever outlived the last test (a server still stopping, a pool, its Redis keys, which
        carry the database's name) from reaching this one.
        """
        if self.name is None or not asyncio.run(self._emptied()):
            self._copy()
        assert self.name is not None
        return self.name

    def drop(self) -> None:
        if self.name is not None:
            self.pg.drop(self.name)
            self.name = None

    def _copy(self) -> None:
        self.drop()
        self.name = self.pg.create(self.pg.new_name("api"), template=self.template)
        self.fingerprint = self.pg.query(self.name, FINGERPRINT)[0][0]

    async def _emptied(self) -> bool:
        assert self.name is not None
        renamed = self.pg.new_name("api")
        try:
            maintenance = await connect(self.pg.address, "postgres")
            try:
                terminate = "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = $1"
                await maintenance.execute(terminate, self.name)
                await maintenance.execute(f"ALTER DATABASE {quote_ident(self.name)} RENAME TO {quote_ident(renamed)}")
                self.name = renamed
            finally:
                await maintenance.close()
            conn = await connect(self.pg.address, renamed)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, SetupError, OSError):
            return False
        try:
            await conn.execute("SET lock_timeout = '5s'")
            await conn.execute(f"TRUNCATE {', '.join(DATA_TABLES)} RESTART IDENTITY")
            return bool(await conn.fetchval(FINGERPRINT) == self.fingerprint)
        except (asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        finally:
            await conn.close()
