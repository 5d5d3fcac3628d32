"""Behind PgBouncer in transaction mode: the service through the pooler, schema work on the server itself."""

from __future__ import annotations

import asyncio
import traceback
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient
from pydantic import ValidationError

from app.cli import main
from app.db.server import ServerAddress, direct_address, server_address
from app.http.app import create_app
from app.settings import Settings
from tests.support.databases import FAST_HASHING, HEAD, Databases
from tests.support.live_server import live_server
from tests.support.pgbouncer import Bouncer, through

PASSWORD = "secret123"


@pytest.mark.slow
async def test_the_service_starts_and_serves_through_pgbouncer(
    pg: Databases, empty_db: str, pgbouncer: Bouncer
) -> None:
    # API_DB_SCHEMA too: PgBouncer refuses search_path as a startup parameter, and a SET would leak.
    settings = pg.settings(empty_db, **FAST_HASHING, **through(pgbouncer, pg), api_db_schema="api")
    # Startup migrates the empty database (on the server itself: a session lock), then seeds through the pooler.
    # A real server, so that requests overlap and the pools open several connections.
    async with live_server(create_app(settings)) as client:
        body = {"username": "rider", "email": "rider@example.com", "password": PASSWORD}
        assert (await client.post("/api/v1/register", json=body)).status_code == 201
        login = await client.post("/api/v1/login", json={"username": "rider", "password": PASSWORD})
        token = {"Authorization": f"Bearer {login.json()['access_token']}"}

        # Many more pooled connections than PgBouncer's two server connections, all at once: without the fix the
        # second request on a connection finds its statement name taken or missing on the other server connection.
        async def me() -> tuple[int, str]:
            response = await client.get("/api/v1/me", headers=token)
            return response.status_code, response.json().get("username")

        answers = await asyncio.gather(*(me() for _ in range(40)))
        assert set(answers) == {(200, "rider")}
        probes = await asyncio.gather(*(client.get(path) for path in ["/health", "/health/ready"] * 10))
        assert {(probe.url.path, probe.status_code) for probe in probes} == {("/health", 200), ("/health/ready", 200)}

    assert await pg.fetch(empty_db, "SELECT username FROM api.users") == [("rider",)]
    # The schema came with each transaction (SET LOCAL), never stayed on the server connections others get next.
    through_pooler = await asyncpg.connect(
        host="127.0.0.1", port=pgbouncer.port, user=pg.address.user, database=empty_db, statement_cache_size=0
    )
    try:
        assert await through_pooler.fetchval("SHOW search_path") == '"$user", public'
    finally:
        await through_pooler.close()


@pytest.mark.slow
def test_init_and_migrate_create_and_change_the_database_on_the_server_itself(
    pg: Databases, pgbouncer: Bouncer, capsys: pytest.CaptureFixture[str]
) -> None:
    name = pg.new_name("pgbouncer_init")
    settings = pg.settings(name, **through(pgbouncer, pg))
    try:
        assert main(["init"], settings=settings) == 0
        assert main(["migrate"], settings=settings) == 0
        said = capsys.readouterr()
        assert "Roles created: user, admin, moderator" in said.out, said
        assert f"API database '{name}': {HEAD} (head)" in said.out
        assert pg.query(name, "SELECT count(*) FROM roles")[0][0] == 3
    finally:
        pg.drop(name)


@pytest.mark.slow
@pytest.mark.parametrize("declared", [False, True], ids=["pooler-unannounced", "API_DB_PGBOUNCER"])
def test_a_missing_database_behind_the_pooler_alone_says_to_set_the_direct_connection(
    pg: Databases, pgbouncer: Bouncer, declared: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    name = pg.new_name("never_created")
    settings = pg.settings(name, **{**through(pgbouncer, pg, direct=False), "api_db_pgbouncer": declared})
    assert main(["init"], settings=settings) == 1
    said = capsys.readouterr().err
    assert said.startswith("error: "), said
    assert said.count("\n") == 1, said
    assert "set MIGRATION_DB_HOST and MIGRATION_DB_PORT to the PostgreSQL server behind it" in said
    assert pg.query("postgres", "SELECT count(*) FROM pg_database WHERE datname = $1", name)[0][0] == 0


async def startup_error(settings: Settings) -> str:
    """What the service's startup failed with (the test client wraps it in a group)."""
    with pytest.raises(BaseException) as refused:  # noqa: PT011
        async with AsyncTestClient(create_app(settings)):
            pass
    return "".join(traceback.format_exception(refused.value))


@pytest.mark.slow
async def test_migrations_as_a_deploy_step_need_only_the_pooler(
    pg: Databases, api_db: str, empty_db: str, pgbouncer: Bouncer
) -> None:
    def settings(database: str, **overrides: Any) -> Settings:
        return pg.settings(database, **FAST_HASHING, **through(pgbouncer, pg, direct=False), **overrides)

    async with AsyncTestClient(create_app(settings(api_db, migrate_on_startup=False))) as client:
        assert (await client.get("/health/ready")).status_code == 200
    refused = await startup_error(settings(empty_db, migrate_on_startup=False))
    assert f"is at no revision, not at the newest migration ({HEAD}); run `just migrate` first" in refused
    # Migrating on startup needs a session lock, which the pooler cannot hold: it says where to connect instead.
    refused = await startup_error(settings(api_db))
    assert "set MIGRATION_DB_HOST and MIGRATION_DB_PORT to the PostgreSQL server behind it" in refused


def test_the_direct_connection_defaults_to_the_services_address_piece_by_piece() -> None:
    pooled = Settings(_env_file=None, api_db_host="db.internal", api_db_port=6432, api_db_pgbouncer=True)
    assert server_address(pooled).pooler
    same_host = pooled.model_copy(update={"migration_db_port": 5432})
    assert direct_address(same_host) == ServerAddress("db.internal", 5432, "mlflow", "mlflow")
    other_host = pooled.model_copy(update={"migration_db_host": "primary.internal"})
    assert direct_address(other_host) == ServerAddress("primary.internal", 6432, "mlflow", "mlflow")
    plain = Settings(_env_file=None, api_db_host="db.internal")
    assert direct_address(plain) == server_address(plain) == ServerAddress("db.internal", 5432, "mlflow", "mlflow")


@pytest.mark.parametrize("setting", [{"api_db_pgbouncer": True}, {"migration_db_host": "db.internal"}], ids=str)
def test_a_pooler_or_a_direct_connection_without_a_configured_server_is_refused(setting: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="is set but API_DB_HOST is not"):
        Settings.model_validate(setting)
