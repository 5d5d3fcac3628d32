"""Instances of the service behind a real HAProxy, and steady load through it: what a rolling deploy looks like."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from app.settings import PROJECT_ROOT
from tests.support.databases import FAST_HASHING, Databases
from tests.support.live_server import free_port
from tests.support.pgbouncer import Bouncer, through
from tests.support.tools import debian_tool, shared_redis

# The balancer checks readiness every 200 ms and drops an instance after two failures: well within the drain period.
# Two, and a check time-out of its own, so that a probe slowed by a busy machine does not take a healthy instance out
# (with every instance out, HAProxy itself answers 503).
CHECK = "check inter 200ms fall 2 rise 1"
# Steady load, not a flood: each client loop sends a request every 50 ms at most (about 20 a second), enough to land
# in every window a deploy opens, and little enough that the tests running beside it keep the machine.
PACE_SECONDS = 0.05
DEADLINE = 60.0


@dataclass
class Instance:
    """`python -m app serve` on a port of its own."""

    port: int
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    # The release it runs: the checkout its `python -m app` imports (this one's by default).
    cwd: Path = PROJECT_ROOT

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app", "serve"],
                env={**self.env, "API_PORT": str(self.port), "PYTHONPATH": str(self.cwd)},
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def stop(self) -> int:
        """SIGTERM, as an orchestrator sends it; the exit code once the instance has drained and exited."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        give_up = time.monotonic() + DEADLINE
        while (code := self.process.poll()) is None:
            assert time.monotonic() < give_up, f"instance on {self.port} did not stop:\n{self.log.read_text()}"
            await asyncio.sleep(0.05)
        return code

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@dataclass
class Balancer:
    port: int
    stats: Path
    process: subprocess.Popen[bytes]

    def _command(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.stats))
            sock.sendall(f"{command}\n".encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return data.decode()

    def route(self, server: str, ready: bool) -> None:
        """Put a server in rotation or take it out (what a Service's endpoints do as readiness changes)."""
        said = self._command(f"set server instances/{server} state {'ready' if ready else 'maint'}")
        assert not said.strip(), said

    def states(self) -> dict[str, str]:
        """Each server's state as HAProxy sees it: UP, DOWN, MAINT, ..."""
        lines = self._command("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
        return {
            row["svname"]: row["status"] for row in rows if row["pxname"] == "instances" and row["svname"][0] == "i"
        }

    async def wait_until(self, server: str, state: str, instance: Instance) -> None:
        give_up = time.monotonic() + DEADLINE
        while not self.states().get(server, "").startswith(state):
            assert self.process.poll() is None, "haproxy exited"
            if state == "UP":
                assert instance.running, f"instance {server} exited:\n{instance.log.read_text()}"
            assert time.monotonic() < give_up, f"{server} not {state}: {self.states()}"
            await asyncio.sleep(0.05)


@contextmanager
def haproxy(folder: Path, instances: int, *, endpoints: bool = False) -> Iterator[tuple[Balancer, list[int]]]:
    """HAProxy in front of `instances` ports (nothing listens on them yet), sending requests to the ready ones.

    `endpoints`: as a Kubernetes Service does, it checks nothing and retries nothing: each server starts out of
    rotation and goes in and out when told (Balancer.route), as the kubelet's readiness probes decide.
    """
    ports = [free_port() for _ in range(instances)]
    port, stats = free_port(), folder / "haproxy.sock"
    each = "disabled" if endpoints else CHECK
    servers = "\n".join(f"  server i{n} 127.0.0.1:{p} {each}" for n, p in enumerate(ports))
    # A connection refused or reset by an instance that has just stopped is retried on another one; a Service's
    # endpoints retry nothing.
    retries = (
        "  retries 0\n"
        if endpoints
        else "  retries 3\n  option redispatch 1\n  retry-on conn-failure empty-response response-timeout\n"
    )
    checks = "" if endpoints else "  option httpchk GET /health/ready\n  http-check expect status 200\n"
    config = folder / "haproxy.cfg"
    config.write_text(
        f"global\n  stats socket {stats} level admin\n"
        "defaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n  timeout check 5s\n"
        f"{retries}"
        f"frontend api\n  bind 127.0.0.1:{port}\n  default_backend instances\n"
        f"backend instances\n  balance roundrobin\n{checks}"
        f"{servers}\n"
    )
    process = subprocess.Popen(
        [debian_tool("haproxy"), "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        give_up = time.monotonic() + 10
        while not stats.exists():
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            assert time.monotonic() < give_up
            time.sleep(0.02)
        yield Balancer(port, stats, process), ports
    finally:
        process.terminate()
        process.wait(timeout=10)


@dataclass
class Load:
    """Sign-ups and authenticated reads through the balancer, until told to stop; every answer counted."""

    base: str
    answers: Counter[str] = field(default_factory=Counter)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    names: Iterator[int] = field(default_factory=itertools.count)
    sign_up_every: float = PACE_SECONDS

    def note(self, what: str, response: httpx.Response | None, error: Exception | None = None) -> None:
        self.answers[
            f"{what} {response.status_code}" if response is not None else f"{what} {type(error).__name__}"
        ] += 1

    async def sign_ups(self, client: httpx.AsyncClient) -> None:
        while not self.stop.is_set():
            name = f"rider{next(self.names)}"
            body = {"username": name, "email": f"{name}@example.com", "password": "secret123"}
            try:
                self.note("register", await client.post("/api/v1/register", json=body))
            except httpx.HTTPError as exc:
                self.note("register", None, exc)
            await asyncio.sleep(self.sign_up_every)

    async def reads(self, client: httpx.AsyncClient, token: str) -> None:
        while not self.stop.is_set():
            try:
                self.note("me", await client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}))
            except httpx.HTTPError as exc:
                self.note("me", None, exc)
            await asyncio.sleep(PACE_SECONDS)


@asynccontextmanager
async def steady_load(
    balancer: Balancer,
    readers: int = 1,
    *,
    verify: Callable[[str], Awaitable[object]] | None = None,
    sign_up_every: float = PACE_SECONDS,
) -> AsyncIterator[Load]:
    """Sign-ups and `readers` loops of authenticated reads through the balancer for the block; the answers counted.
    `verify` marks the reader's email verified (for a service that requires it) before it logs in; a sign-up at most
    every `sign_up_every` seconds (a service's own rate limit allows so many)."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{balancer.port}", timeout=30) as client:
        load = Load(str(client.base_url), sign_up_every=sign_up_every)
        body = {"username": "reader", "email": "reader@example.com", "password": "secret123"}
        assert (await client.post("/api/v1/register", json=body)).status_code == 201
        if verify is not None:
            await verify("reader")
        login = await client.post("/api/v1/login", json={"username": "reader", "password": "secret123"})
        token = login.json()["access_token"]
        workers = [
            asyncio.create_task(load.sign_ups(client)),
            *(asyncio.create_task(load.reads(client, token)) for _ in range(readers)),
        ]
        try:
            yield load
        finally:
            load.stop.set()
            await asyncio.gather(*workers)


def production_env(pg: Databases, db: str, bouncer: Bouncer, **settings: object) -> dict[str, str]:
    """An instance as in production: through PgBouncer, migrating nothing at startup, counting in the shared Redis,
    with cheap hashing and a small pool (the machine runs several)."""
    values = {
        **through(bouncer, pg, direct=False),
        "migrate_on_startup": False,
        "redis_url": shared_redis(),
        "hash_workers": 1,
        "db_pool_size": 4,
        **FAST_HASHING,
        **settings,
    }
    return {**pg.env(db), **as_environment(values)}


def as_environment(values: dict[str, object]) -> dict[str, str]:
    """Settings as environment variables: names in capitals, booleans as `true`/`false`, the rest as they are (a
    socket directory's path keeps its case)."""
    return {
        name.upper(): str(value).lower() if isinstance(value, bool) else str(value) for name, value in values.items()
    }
