"""Test databases on a real PostgreSQL: the embedded one by default, TEST_DATABASE_URL's server when set."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import asyncpg
import sqlalchemy as sa
from alembic.config import Config
from alembic.script import ScriptDirectory

from app.db.migrations import ALEMBIC_INI
from app.db.provision import connect, quote_ident
from app.db.server import ServerAddress, start_embedded
from app.settings import PROJECT_ROOT, Settings

PREFIX = "bikerental_test"
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


class Databases:
    """Creates, clones and drops the databases of one test session."""

    def __init__(self, url: str | None = None) -> None:
        self.address, self.fields = server_for_tests(url)

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
