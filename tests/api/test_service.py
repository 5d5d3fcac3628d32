"""The service around registration: health, database outages, startup, and `just serve` itself."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import asyncpg
import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.db.server import start_embedded, stop_embedded
from app.http.app import create_app
from app.http.errors import database_is_unavailable
from app.settings import PROJECT_ROOT, Settings
from tests.support.databases import FAST_HASHING, HEAD, Databases
from tests.support.live_server import free_port, live_server
from tests.support.polling import poll

SIGN_UP = {"username": "rider", "email": "rider@example.com", "password": "secret123"}


async def test_health_answers_when_the_database_does(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/health")
    assert (response.status_code, response.json()) == (200, {"status": "ok", "database": "ok"})


async def test_sign_up_without_the_user_role_is_a_json_500_and_creates_no_user(
    pg: Databases, api_db: str, client: AsyncTestClient[Litestar]
) -> None:
    await pg.fetch(api_db, "DELETE FROM roles WHERE name = 'user'")
    response = await client.post("/api/v1/register", json=SIGN_UP)
    assert (response.status_code, response.json()) == (
        500,
        {"type": "about:blank", "title": "Internal Server Error", "status": 500, "detail": "Internal server error"},
    )
    # The user and its role are one transaction: without the role, the user is rolled back too.
    assert await pg.fetch(api_db, "SELECT username FROM users") == []


async def api_backends(pg: Databases, database: str) -> int:
    # Client sessions only: an autovacuum worker may visit the database at any time.
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'"
    rows = await pg.fetch("postgres", query, database)
    count: int = rows[0][0]
    return count


async def test_stopping_the_service_closes_its_database_connections(pg: Databases, api_db: str) -> None:
    async with AsyncTestClient(create_app(pg.settings(api_db, **FAST_HASHING))) as client:
        assert (await client.post("/api/v1/register", json=SIGN_UP)).status_code == 201
        assert await api_backends(pg, api_db) > 0  # the pool keeps its connection between requests
    # A backend exits a moment after its client hangs up.
    async with asyncio.timeout(5):
        while True:
            if await api_backends(pg, api_db) == 0:
                return
            await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_database_outage_is_503_everywhere_and_recovers(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg"
    start_embedded(data_dir)
    settings = Settings.model_validate(
        {"api_db_host": "", "embedded_db_dir": str(data_dir), "api_db_name": "outage", **FAST_HASHING}
    )
    try:
        async with live_server(create_app(settings)) as client:
            assert (await client.post("/api/v1/register", json=SIGN_UP)).status_code == 201
            login = await client.post("/api/v1/login", json={"username": "rider", "password": "secret123"})
            bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}
            await asyncio.to_thread(stop_embedded, data_dir)

            health = await client.get("/health")
            assert health.status_code == 503
            assert health.json() == {"status": "unavailable", "database": "unreachable"}
            refused = await client.post("/api/v1/register", json={**SIGN_UP, "username": "second"})
            assert refused.status_code == 503
            assert refused.json()["detail"] == "The database is unavailable; retry shortly"
            assert refused.headers["retry-after"]
            me = await client.get("/api/v1/me", headers=bearer)
            assert (me.status_code, me.json()["detail"]) == (503, "The database is unavailable; retry shortly")
            # The process itself is fine: a supervisor must not restart it; a balancer must send it nothing.
            assert (await client.get("/health/live")).status_code == 200
            not_ready = await client.get("/health/ready")
            assert (not_ready.status_code, not_ready.json()["database"]) == (503, "unreachable")
            assert not_ready.headers["retry-after"]

            # Another process brings the server back, as `just migrate` in a second terminal would.
            code = f"import pathlib, app.db.server as s; s.start_embedded(pathlib.Path({str(data_dir)!r}))"
            restart = [sys.executable, "-c", code]
            await asyncio.to_thread(subprocess.run, restart, cwd=PROJECT_ROOT, check=True, timeout=60)
            await poll(client, "/health", 200)
            again = await client.post("/api/v1/register", json={**SIGN_UP, "username": "second", "email": "s@x.io"})
            assert again.status_code == 201
    finally:
        stop_embedded(data_dir)


async def test_instances_in_one_process_start_together(pg: Databases, empty_db: str) -> None:
    settings = pg.settings(empty_db, **FAST_HASHING)

    async def start_and_check() -> int:
        async with live_server(create_app(settings)) as client:
            return (await client.get("/health")).status_code

    assert await asyncio.gather(*(start_and_check() for _ in range(3))) == [200, 200, 200]
    assert len(await pg.fetch(empty_db, "SELECT name FROM roles")) == 3


async def test_startup_without_migrating_refuses_a_database_behind_head(pg: Databases, empty_db: str) -> None:
    settings = pg.settings(empty_db, **FAST_HASHING, migrate_on_startup=False)
    with pytest.raises(BaseException) as refused:  # noqa: PT011  (the test client wraps it in a group)
        async with AsyncTestClient(create_app(settings)):
            pass
    assert f"is at no revision, not at the newest migration ({HEAD}); run `just migrate`" in "".join(
        traceback.format_exception(refused.value)
    )
    assert await pg.fetch(empty_db, "SELECT 1 FROM information_schema.tables WHERE table_name = 'users'") == []


@pytest.mark.slow
async def test_three_services_started_at_once_on_one_database(pg: Databases, empty_db: str) -> None:
    ports = [free_port() for _ in range(3)]
    base_env = {**pg.env(empty_db), **{k.upper(): str(v) for k, v in FAST_HASHING.items()}}
    servers = [
        subprocess.Popen(
            [sys.executable, "-m", "app", "serve"],
            env={**base_env, "API_PORT": str(port)},
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for port in ports
    ]
    try:
        for port in ports:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                await poll(client, "/health", 200, deadline=60)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports[0]}") as client:
            assert (await client.post("/api/v1/register", json=SIGN_UP)).status_code == 201
    finally:
        for server in servers:
            server.send_signal(signal.SIGINT)
        outputs = [server.communicate(timeout=30)[0] for server in servers]
    assert [server.returncode for server in servers] == [0, 0, 0], outputs
    said = "\n".join(outputs)
    assert "Traceback" not in said
    assert "secret123" not in said
    assert [r[0] for r in await pg.fetch(empty_db, "SELECT version_num FROM alembic_version")] == [HEAD]
    assert sorted(r[0] for r in await pg.fetch(empty_db, "SELECT name FROM roles")) == ["admin", "moderator", "user"]


@pytest.mark.slow
def test_serve_explains_an_unreachable_server(pg: Databases) -> None:
    env = {**pg.env("x"), "API_DB_HOST": "127.0.0.1", "API_DB_PORT": str(free_port())}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "app", "serve"], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "cannot reach PostgreSQL at 127.0.0.1" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 30


@pytest.mark.slow
def test_serve_refuses_a_database_behind_head_in_one_line(pg: Databases, empty_db: str) -> None:
    env = {**pg.env(empty_db), "MIGRATE_ON_STARTUP": "false"}
    result = subprocess.run(
        [sys.executable, "-m", "app", "serve"], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert f"not at the newest migration ({HEAD}); run `just migrate` first" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("error", "outage"),
    [
        (asyncpg.AdminShutdownError("terminating connection due to administrator command"), True),
        (asyncpg.TooManyConnectionsError("sorry, too many clients already"), True),
        (asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"), True),
        (asyncpg.InterfaceError("pool is closing"), True),
        (asyncpg.InterfaceError("cannot perform operation: another operation is in progress"), False),
        (asyncpg.DataError("invalid input for query argument $1"), False),
        (asyncpg.QueryCanceledError("canceling statement due to statement timeout"), True),
        (asyncpg.UndefinedColumnError('column "nope" does not exist'), False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
def test_asyncpg_errors_on_the_authenticated_read_are_503_only_when_the_database_is_out(
    error: Exception, outage: bool
) -> None:
    assert database_is_unavailable(error) is outage


async def test_ready_only_on_a_schema_its_release_runs_on(pg: Databases, api_db: str) -> None:
    async with AsyncTestClient(create_app(pg.settings(api_db, **FAST_HASHING))) as client:
        assert (await client.get("/health/live")).json() == {"status": "ok", "database": "not checked"}
        ready = await client.get("/health/ready")
        assert (ready.status_code, ready.json()) == (200, {"status": "ready", "database": "ok", "schema": "at head"})
        # As if this release's migrations had not run yet: the schema lacks what its code needs.
        await pg.fetch(api_db, "UPDATE alembic_version SET version_num = '0001'")
        behind = await client.get("/health/ready")
        pending = "revisions 0002, 0003, 0004, 0005, 0006 of this release are not applied; run `just migrate` first"
        assert (behind.status_code, behind.json()["schema"]) == (503, f"not compatible: {pending}")
        assert (await client.get("/health")).status_code == 200  # /health stays as it was


@pytest.mark.slow
async def test_sigterm_turns_the_instance_not_ready_then_it_drains_and_exits(pg: Databases, api_db: str) -> None:
    port, drain = free_port(), 2.0
    env = {**pg.env(api_db), **{k.upper(): str(v) for k, v in FAST_HASHING.items()}}
    server = subprocess.Popen(
        [sys.executable, "-m", "app", "serve"],
        env={**env, "API_PORT": str(port), "DRAIN_SECONDS": str(drain)},
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            await poll(client, "/health/ready", 200, deadline=60)
            server.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            draining = await poll(client, "/health/ready", 503)
            assert draining.json()["status"] == "draining"
            # Still serving while the balancer notices: what reaches it now is answered, not dropped.
            assert (await client.get("/health/live")).status_code == 200
            assert (await client.post("/api/v1/register", json=SIGN_UP)).status_code == 201
        output, _ = await asyncio.to_thread(server.communicate, timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.returncode == 0, output
    assert time.monotonic() - signalled >= drain
    assert "Traceback" not in output
