"""The embedded server starts on demand and stops on request; a configured server is used as set."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.db.server import start_embedded, stop_embedded
from tests.databases import Databases, run_app


@pytest.fixture
def role(pg: Databases) -> Iterator[str]:
    """A login role with a password and CREATEDB, as a compose user's `mlflow` role."""
    name = pg.new_name("role")
    pg.query("postgres", f"CREATE ROLE {name} LOGIN CREATEDB PASSWORD 'p@ss:w/rd'")
    yield name
    for (db,) in pg.query("postgres", f"SELECT datname FROM pg_database WHERE datname LIKE '{name}%'"):
        pg.drop(db)
    pg.query("postgres", f"DROP ROLE {name}")


def configured_env(pg: Databases, role: str, database: str) -> dict[str, str]:
    return {
        **pg.env(database),
        "API_DB_HOST": pg.address.host,
        "API_DB_PORT": str(pg.address.port),
        "API_DB_USER": role,
        "API_DB_PASSWORD": "p@ss:w/rd",
    }


def test_commands_on_a_configured_server_with_password(pg: Databases, role: str) -> None:
    env = configured_env(pg, role, f"{role}_api")
    for args in (["init"], ["seed"], ["current"]):
        result = run_app(args, env)
        assert result.returncode == 0, result.stderr
        assert "p@ss:w/rd" not in result.stdout + result.stderr
    assert "0002 (head)" in result.stdout
    owner = pg.query("postgres", "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", f"{role}_api")
    assert owner[0][0] == role


def test_a_role_that_may_not_create_the_database_gets_told(pg: Databases, role: str) -> None:
    pg.query("postgres", f"ALTER ROLE {role} NOCREATEDB")
    result = run_app(["migrate"], configured_env(pg, role, f"{role}_api"))
    assert result.returncode == 1
    assert f"database '{role}_api' does not exist and user '{role}' may not create it" in result.stderr


def test_embedded_server_starts_on_demand_and_stops(tmp_path: Path, pg: Databases) -> None:
    data_dir = tmp_path / "pg"
    env = {**pg.env("bikerental_api"), "API_DB_HOST": "", "EMBEDDED_DB_DIR": str(data_dir)}
    result = run_app(["init"], env)
    assert result.returncode == 0, result.stderr
    pid = int((data_dir / "postmaster.pid").read_text().split()[0])
    assert run_app(["current"], env).stdout.strip() == "API database 'bikerental_api': 0002 (head)"
    assert int((data_dir / "postmaster.pid").read_text().split()[0]) == pid  # reused, not restarted
    stopped = run_app(["db-stop"], env)
    assert stopped.stdout.strip() == "Embedded PostgreSQL stopped."
    assert not (data_dir / "postmaster.pid").exists()
    assert run_app(["db-stop"], env).stdout.strip() == "Embedded PostgreSQL was not running."
    assert start_embedded(data_dir).is_socket
    assert stop_embedded(data_dir)
