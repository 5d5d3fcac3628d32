"""`just bench-million`: a million users. Pages of the user list stay fast; migrations do not stop the service.

First GET /api/v1/users: the first page, a deep page, a deep page of a role's holders (target < 50 ms each). Then,
with the service serving authenticated reads and admin writes, a nullable column and a concurrently built index,
applied three ways: `just migrate` (automatic backup included), plain `alembic upgrade head`, and another
instance's startup; then the new column backfilled for every user in batches (app/migrations/backfill.py). For each:
failed requests (target 0) and the longest request; for the backfill, rows per second too.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from argon2 import PasswordHasher

from app.db.provision import connect, prepare_api_database
from app.migrations.lint import ADVICE
from app.migrations.scratch import scratch_database
from app.settings import PROJECT_ROOT, get_settings
from tests.support.databases import HEAD
from tests.support.live_server import free_port
from tests.support.polling import wait_healthy
from tests.support.revisions import revision_file

USERS = 1_000_000
WORKERS = 4
ADMIN_PASSWORD = "benchmark admin password"
CITY_COLUMN = revision_file(
    "0901",
    HEAD,
    'op.add_column("users", sa.Column("city", sa.String(100), nullable=True))',
    downgrade='op.drop_column("users", "city")  # squawk-ignore: ban-drop-column',
    message="Add city to users",
)
CITY_BACKFILL = revision_file(
    "0903",
    "0902",
    """\
    with op.get_context().autocommit_block():
        backfill("users", "city", "'City ' || (id % 100)")""",
    message="Fill every user's city",
)


def city_index() -> str:
    def pasted(rule: str) -> str:
        return "    " + ADVICE[rule].split(":\n", 1)[1].strip()

    return (
        '"""Index users by city."""\n\nfrom alembic import op\n\nrevision = "0902"\ndown_revision = "0901"\n\n\n'
        f"def upgrade() -> None:\n{pasted('require-concurrent-index-creation')}\n\n\n"
        f"def downgrade() -> None:\n{pasted('require-concurrent-index-deletion')}\n"
    )


@dataclass(frozen=True)
class Request:
    kind: str
    started: float
    ended: float
    ok: bool
    said: str  # the status, or the error's type


async def load(base: str, token: str, stop: asyncio.Event, done: list[Request]) -> None:
    """Authenticated reads and admin writes, WORKERS at a time, until `stop`."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:

        async def worker(n: int) -> None:
            rng = random.Random(n)
            while not stop.is_set():
                user = rng.randint(2, USERS)
                kind = "write" if n % 2 else "read"
                started = time.monotonic()
                try:
                    if kind == "write":
                        response = await client.patch(f"/api/v1/users/{user}", json={"is_active": True})
                    else:
                        response = await client.get("/api/v1/me" if rng.random() < 0.5 else f"/api/v1/users/{user}")
                    ok, said = response.status_code == 200, f"{response.request.url.path} {response.status_code}"
                except httpx.TransportError as exc:
                    ok, said = False, type(exc).__name__
                done.append(Request(kind, started, time.monotonic(), ok, said))

        await asyncio.gather(*(worker(n) for n in range(WORKERS)))


async def list_pages(base: str, token: str) -> None:
    """The median time of GET /api/v1/users for pages near the start and near the end, with and without a role."""
    pages = {
        "first page": "limit=20",
        "deep page (after 900,000)": "limit=20&after=900000",
        "role `user`, deep page": "role=user&limit=20&after=900000",
        "role `admin` (one holder)": "role=admin&limit=20",
    }
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        for name, query in pages.items():
            times = []
            for _ in range(21):
                started = time.monotonic()
                response = await client.get(f"/api/v1/users?{query}")
                times.append((time.monotonic() - started) * 1000)
                assert response.status_code == 200, response.text
            print(f"GET /api/v1/users, {name}: median {statistics.median(times):.1f} ms (target < 50 ms)")


def during(requests: list[Request], start: float, end: float) -> str:
    """Failed requests and the longest read and write among those that overlapped the window."""
    overlapping = [r for r in requests if r.ended >= start and r.started <= end]
    failed = sum(not r.ok for r in overlapping)
    longest = {
        kind: max(((r.ended - r.started) * 1000 for r in overlapping if r.kind == kind), default=0.0)
        for kind in ("read", "write")
    }
    failures = sorted({r.said for r in overlapping if not r.ok})
    slowest = max(overlapping, key=lambda r: r.ended - r.started, default=None)
    when = f" ({slowest.said}, {slowest.started - start:+.1f} s into it)" if slowest else ""
    return (
        f"{len(overlapping)} requests, {failed} failed (target 0){' ' + str(failures) if failures else ''}, "
        f"longest read {longest['read']:.0f} ms, longest write {longest['write']:.0f} ms{when}"
    )


async def fill(settings_name: str) -> None:
    settings = get_settings().model_copy(update={"api_db_name": settings_name})
    conn = await connect(await prepare_api_database(settings), settings_name)
    digest = PasswordHasher().hash("not a real password")
    try:
        await conn.execute(
            "INSERT INTO users (username, email, hashed_password) "
            "SELECT 'rider' || g, 'rider' || g || '@example.com', $1 FROM generate_series(2, $2) g",
            digest,
            USERS,
        )
        await conn.execute(
            "INSERT INTO user_roles SELECT u.id, r.id FROM users u, roles r WHERE r.name = 'user' "
            "ON CONFLICT DO NOTHING"
        )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


def run(args: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.monotonic()
    result = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {result.stderr}")
    return time.monotonic() - started


def serve(cwd: Path, env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    """The service on `port`; its warnings and errors go to `log` (WARNING: no request lines)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "app", "serve"],
            cwd=cwd,
            env={**env, "API_PORT": str(port), "LOG_LEVEL": "WARNING", "LOG_FORMAT": "text"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def measure(database: str, project: Path, folder: Path) -> None:
    settings = get_settings()
    env = {
        **os.environ,
        # The copy of the project must reach this server, not start an embedded one of its own in its folder.
        "EMBEDDED_DB_DIR": str(settings.embedded_db_dir),
        "API_DB_HOST": settings.api_db_host or "",
        "API_DB_PORT": str(settings.api_db_port),
        "API_DB_USER": settings.api_db_user,
        "API_DB_PASSWORD": settings.api_db_password.get_secret_value(),
        "API_DB_NAME": database,
        "RATE_LIMIT_PER_MINUTE": str(10**6),
        "BACKUP_DIR": str(folder / "backups"),
        "ADMIN_PASSWORD": ADMIN_PASSWORD,
    }
    ours = {**env, "PYTHONPATH": str(PROJECT_ROOT)}
    theirs = {**env, "PYTHONPATH": str(project)}
    run(["-m", "app", "init"], PROJECT_ROOT, ours)
    run(["-m", "app", "create-admin", "admin", "admin@example.com"], PROJECT_ROOT, ours)
    started = time.monotonic()
    await fill(database)
    print(f"{USERS:,} users written in {time.monotonic() - started:.0f} s")

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    service = serve(PROJECT_ROOT, ours, port, folder / "service.log")
    try:
        await wait_healthy(base, service)
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            login = await client.post("/api/v1/login", json={"username": "admin", "password": ADMIN_PASSWORD})
            token = login.json()["access_token"]
        await list_pages(base, token)
        requests: list[Request] = []
        stop = asyncio.Event()
        traffic = asyncio.create_task(load(base, token, stop, requests))
        await asyncio.sleep(2)
        quiet = time.monotonic()
        await asyncio.sleep(3)
        print(f"before any migration: {during(requests, quiet, time.monotonic())}")
        no_backup = {**theirs, "AUTO_BACKUP": "false"}
        paths = [
            ("just migrate (automatic backup included)", ["-m", "app", "migrate"], theirs),
            ("alembic upgrade head", ["-m", "alembic", "upgrade", "head"], theirs),
        ]
        for name, args, path_env in paths:
            start = time.monotonic()
            took = await asyncio.to_thread(run, args, project, path_env)
            print(f"{name}: {took:.1f} s; during it: {during(requests, start, time.monotonic())}")
            for backup in sorted((folder / "backups").glob("*.dump")):
                print(f"  automatic backup {backup.name}: {backup.stat().st_size / 2**20:.0f} MiB")
                backup.unlink()
            await asyncio.to_thread(run, ["-m", "app", "downgrade", HEAD], project, no_backup)
        start = time.monotonic()
        other_port = free_port()
        other = serve(project, no_backup, other_port, folder / "other.log")
        try:
            # Healthy only once its startup hook has migrated the database to the copy's head.
            await wait_healthy(f"http://127.0.0.1:{other_port}", other)
        finally:
            other.terminate()
            # Off the event loop: the load goes on while the other instance drains and stops.
            await asyncio.to_thread(other.wait, 60)
        took = time.monotonic() - start
        print(f"another instance's startup: {took:.1f} s; during it: {during(requests, start, time.monotonic())}")
        (project / "alembic" / "versions" / "0903_fill_city.py").write_text(CITY_BACKFILL)
        start = time.monotonic()
        took = await asyncio.to_thread(run, ["-m", "app", "migrate"], project, no_backup)
        print(
            f"backfill of users.city, {USERS:,} rows in batches through `just migrate`: {took:.1f} s, "
            f"{USERS / took:,.0f} rows/s; during it: {during(requests, start, time.monotonic())}"
        )
        stop.set()
        await traffic
    finally:
        service.terminate()
        service.wait(timeout=60)
        said = [line for line in (folder / "service.log").read_text().splitlines() if line.startswith(("WARN", "ERR"))]
        print(f"the service logged {len(said)} warnings and errors{': ' if said else ''}{'; '.join(said[:5])}")


def main() -> None:
    settings = get_settings()
    with tempfile.TemporaryDirectory(prefix="bench-million-") as tmp:
        folder = Path(tmp)
        project = folder / "project"
        for name in ("app", "alembic"):
            shutil.copytree(PROJECT_ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("alembic.ini", "pyproject.toml"):
            shutil.copy(PROJECT_ROOT / name, project)
        versions = project / "alembic" / "versions"
        (versions / "0901_add_city_to_users.py").write_text(CITY_COLUMN)
        (versions / "0902_index_users_by_city.py").write_text(city_index())
        with scratch_database(settings, "bench_million") as bench:
            asyncio.run(measure(bench.api_db_name, project, folder))


if __name__ == "__main__":
    main()
