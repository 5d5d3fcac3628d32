"""The embedded server starts on demand and stops on request; a configured server is used as set."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.db.provision import connect
from app.db.server import ServerAddress, embedded_bin_dir, start_embedded, stop_embedded
from tests.support.databases import HEAD, Databases, run_app

pytestmark = pytest.mark.slow  # servers with roles of their own, and `python -m app` as a user runs it

PASSWORD = "p@ss:w/rd"


@pytest.fixture(scope="module")
def scram_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerAddress]:
    """A server of its own that checks passwords (scram-sha-256), like a real one; the shared one trusts everyone."""
    data_dir = tmp_path_factory.mktemp("scram") / "pg"
    address = start_embedded(data_dir)
    (data_dir / "pg_hba.conf").write_text("local all postgres trust\nlocal all all scram-sha-256\n")
    reload = [str(embedded_bin_dir() / "pg_ctl"), "reload", "-D", str(data_dir)]
    subprocess.run(reload, check=True, capture_output=True, user="pgserver" if os.geteuid() == 0 else None)
    try:
        yield address
    finally:
        stop_embedded(data_dir)


async def as_superuser(address: ServerAddress, statement: str) -> None:
    conn = await connect(address, "postgres")
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture
def role(scram_server: ServerAddress) -> str:
    """A login role with a password and CREATEDB, as a compose user's `mlflow` role."""
    name = f"api_{uuid.uuid4().hex[:8]}"
    asyncio.run(as_superuser(scram_server, f"CREATE ROLE {name} LOGIN CREATEDB PASSWORD '{PASSWORD}'"))
    return name


def configured_env(pg: Databases, server: ServerAddress, role: str, password: str = PASSWORD) -> dict[str, str]:
    return {
        **pg.env(f"{role}_api"),
        "API_DB_HOST": server.host,
        "API_DB_PORT": str(server.port),
        "API_DB_USER": role,
        "API_DB_PASSWORD": password,
    }


def test_commands_on_a_configured_server_with_password(pg: Databases, scram_server: ServerAddress, role: str) -> None:
    env = configured_env(pg, scram_server, role)
    for args in (["init"], ["seed"], ["current"]):
        result = run_app(args, env)
        assert result.returncode == 0, result.stderr
        assert "p@ss:w/rd" not in result.stdout + result.stderr
    assert f"{HEAD} (head)" in result.stdout
    assert "p@ss:w/rd" not in result.stdout + result.stderr


def test_a_wrong_password_is_refused_clearly(pg: Databases, scram_server: ServerAddress, role: str) -> None:
    result = run_app(["migrate"], configured_env(pg, scram_server, role, password="wrong password"))
    assert result.returncode == 1
    assert f"PostgreSQL refused user '{role}'" in result.stderr
    assert "check API_DB_USER and API_DB_PASSWORD" in result.stderr
    assert "wrong password" not in result.stderr
    assert "Traceback" not in result.stderr


def test_a_role_that_may_not_create_the_database_gets_told(
    pg: Databases, scram_server: ServerAddress, role: str
) -> None:
    asyncio.run(as_superuser(scram_server, f"ALTER ROLE {role} NOCREATEDB"))
    result = run_app(["migrate"], configured_env(pg, scram_server, role))
    assert result.returncode == 1
    assert f"database '{role}_api' does not exist and user '{role}' may not create it" in result.stderr


@pytest.mark.slow
def test_embedded_server_starts_on_demand_and_stops(tmp_path: Path, pg: Databases) -> None:
    data_dir = tmp_path / "pg"
    env = {**pg.env("bikerental_api"), "API_DB_HOST": "", "EMBEDDED_DB_DIR": str(data_dir)}
    try:
        result = run_app(["init"], env)
        assert result.returncode == 0, result.stderr
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])
        assert run_app(["current"], env).stdout.strip() == f"API database 'bikerental_api': {HEAD} (head)"
        assert int((data_dir / "postmaster.pid").read_text().split()[0]) == pid  # reused, not restarted
        stopped = run_app(["db-stop"], env)
        assert stopped.stdout.strip() == "Embedded PostgreSQL stopped."
        assert not (data_dir / "postmaster.pid").exists()
        assert run_app(["db-stop"], env).stdout.strip() == "Embedded PostgreSQL was not running."
        assert start_embedded(data_dir).is_socket
    finally:
        stop_embedded(data_dir)
