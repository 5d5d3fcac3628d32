"""`just bench-migrations`: migrations on a million users do not stop the service serving.

A million users, the service serving authenticated reads and admin writes, and meanwhile a nullable column and a
concurrently built index, applied three ways: `just migrate` (automatic backup included), plain `alembic upgrade
head`, and another instance's startup. For each: failed requests (target 0) and the longest request.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from argon2 import PasswordHasher

from app.db.lint import ADVICE
from app.db.provision import connect, prepare_api_database
from app.db.scratch import scratch_database
from app.settings import PROJECT_ROOT, get_settings
from tests.benchmark import free_port, wait_healthy

USERS = 1_000_000
WORKERS = 4
ADMIN_PASSWORD = "benchmark admin password"
CITY_COLUMN = '''"""Add city to users."""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.add_column("users", sa.Column("city", sa.String(100), nullable=True))


def downgrade() -> None:
    op.drop_column("users", "city")  # squawk-ignore: ban-drop-column
'''


def city_index() -> str:
    def pasted(rule: str) -> str:
        return "    " + ADVICE[rule].split(":\n", 1)[1].strip()

    return (
        '"""Index users by city."""\n\nfrom alembic import op\n\nrevision = "0004"\ndown_revision = "0003"\n\n\n'
        f"def upgrade() -> None:\n{pasted('require-concurrent-index-creation')}\n\n\n"
        f"def downgrade() -> None:\n{pasted('require-concurrent-index-deletion')}\n"
    )


@dataclass(frozen=True)
class Request:
    kind: str
    started: float
    ended: float
    ok: bool


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
                    ok = response.status_code == 200
                except httpx.TransportError:
                    ok = False
                done.append(Request(kind, started, time.monotonic(), ok))

        await asyncio.gather(*(worker(n) for n in range(WORKERS)))


def during(requests: list[Request], start: float, end: float) -> str:
    """Failed requests and the longest read and write among those that overlapped the window."""
    overlapping = [r for r in requests if r.ended >= start and r.started <= end]
    failed = sum(not r.ok for r in overlapping)
    longest = {
        kind: max(((r.ended - r.started) * 1000 for r in overlapping if r.kind == kind), default=0.0)
        for kind in ("read", "write")
    }
    return (
        f"{len(overlapping)} requests, {failed} failed (target 0), longest read {longest['read']:.0f} ms, "
        f"longest write {longest['write']:.0f} ms"
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


def serve(cwd: Path, env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "app", "serve"],
        cwd=cwd,
        env={**env, "API_PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def measure(database: str, project: Path, folder: Path) -> None:
    env = {
        **os.environ,
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
    service = serve(PROJECT_ROOT, ours, port)
    try:
        await wait_healthy(base, service)
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            login = await client.post("/api/v1/login", json={"username": "admin", "password": ADMIN_PASSWORD})
            token = login.json()["access_token"]
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
            await asyncio.to_thread(run, ["-m", "app", "downgrade", "0002"], project, no_backup)
        start = time.monotonic()
        other_port = free_port()
        other = serve(project, no_backup, other_port)
        try:
            # Healthy only once its startup hook has migrated the database to the copy's head.
            await wait_healthy(f"http://127.0.0.1:{other_port}", other)
        finally:
            other.terminate()
            other.wait(timeout=60)
        took = time.monotonic() - start
        print(f"another instance's startup: {took:.1f} s; during it: {during(requests, start, time.monotonic())}")
        stop.set()
        await traffic
    finally:
        service.terminate()
        service.wait(timeout=60)


def main() -> None:
    settings = get_settings()
    with tempfile.TemporaryDirectory(prefix="bench-migrations-") as tmp:
        folder = Path(tmp)
        project = folder / "project"
        for name in ("app", "alembic"):
            shutil.copytree(PROJECT_ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("alembic.ini", "pyproject.toml"):
            shutil.copy(PROJECT_ROOT / name, project)
        versions = project / "alembic" / "versions"
        (versions / "0003_add_city_to_users.py").write_text(CITY_COLUMN)
        (versions / "0004_index_users_by_city.py").write_text(city_index())
        with scratch_database(settings, "bench_migrations") as bench:
            asyncio.run(measure(bench.api_db_name, project, folder))


if __name__ == "__main__":
    main()
