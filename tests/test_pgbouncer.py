"""Behind PgBouncer in transaction mode: the service through the pooler, schema work on the server itself."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient
from pydantic import ValidationError

from app.cli import main
from app.db.server import ServerAddress, direct_address, server_address
from app.http.app import create_app
from app.settings import Settings
from tests.conftest import FAST_HASHING
from tests.databases import HEAD, Databases
from tests.live_server import live_server

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
PASSWORD = "secret123"


@dataclass(frozen=True)
class Bouncer:
    """A PgBouncer on 127.0.0.1:`port`, in transaction mode, in front of the test server."""

    port: int
    log: Path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _run_as(server_host: str) -> str | None:
    """PgBouncer refuses to run as root: run it as the owner of the server's socket folder (who may enter it)."""
    if os.geteuid() != 0:
        return None
    owner = pwd.getpwuid(os.stat(server_host).st_uid).pw_name if server_host.startswith("/") else "root"
    return owner if owner != "root" else "nobody"


@pytest.fixture(scope="module")
def pgbouncer(pg: Databases) -> Iterator[Bouncer]:
    if not Path(PGBOUNCER).is_file():
        if os.environ.get("CI"):
            raise AssertionError("pgbouncer is not installed: .ci/run installs it (apt-get install pgbouncer)")
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    server = pg.address
    folder = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
    port = _free_port()
    password = f" password={server.password}" if server.password else ""
    # Two server connections for every client: the service's pooled connections take turns on them, as in
    # production, so a statement prepared on one is looked for on the other.
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={server.host} port={server.port} user={server.user}{password}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {folder / 'users.txt'}\n"
        "pool_mode = transaction\ndefault_pool_size = 2\nmax_client_conn = 200\n"
        + (f"user = {user}\n" if (user := _run_as(server.host)) else "")
    )
    (folder / "users.txt").write_text(f'"{server.user}" ""\n')
    if user:
        for path in (folder, *folder.iterdir()):
            shutil.chown(path, user)
    log = folder / "pgbouncer.log"
    with log.open("wb") as output:
        process = subprocess.Popen([PGBOUNCER, str(folder / "pgbouncer.ini")], stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, f"pgbouncer exited: {log.read_text()}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"pgbouncer did not listen on {port}: {log.read_text()}"
                time.sleep(0.02)
        yield Bouncer(port, log)
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def through(bouncer: Bouncer, pg: Databases, *, direct: bool = True) -> dict[str, Any]:
    """Settings that put the service behind `bouncer` and, when `direct`, schema work on the server itself."""
    values: dict[str, Any] = {
        "api_db_host": "127.0.0.1",
        "api_db_port": bouncer.port,
        "api_db_user": pg.address.user,
        "api_db_password": pg.address.password or "",
        "api_db_pgbouncer": True,
    }
    if direct:
        values |= {"migration_db_host": pg.address.host, "migration_db_port": pg.address.port}
    return values


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
