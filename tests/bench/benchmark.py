"""`just bench`: hashing rate vs registration rate, health latency under load, peak memory of a burst.

Figures from one run on one machine, compared as ratios: these machines are shared and noisy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
from argon2 import PasswordHasher

from app.db.server import server_address
from app.kit.passwords import hash_worker_count, lower_thread_priority
from app.migrations.scratch import scratch_database
from app.settings import PROJECT_ROOT, Settings, get_settings
from tests.support.live_server import free_port
from tests.support.polling import wait_healthy


def raw_hash_rate(settings: Settings, hashes: int) -> float:
    """Hashes per second with the service's parameters, one worker per core."""
    hasher = PasswordHasher(
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism,
    )
    workers = hash_worker_count(settings)
    # The same priority as the service's hashing threads, so the ratio compares like with like.
    with ThreadPoolExecutor(workers, initializer=lower_thread_priority) as pool:
        list(pool.map(hasher.hash, ["warm-up password"] * workers))
        started = time.perf_counter()
        list(pool.map(hasher.hash, [f"password {i}" for i in range(hashes)]))
        return hashes / (time.perf_counter() - started)


# wrk's script for sign-ups, each with a name of its own (one wrk thread: the counter is not shared).
SIGN_UPS_LUA = """
local counter = 0
request = function()
  counter = counter + 1
  local name = "rate" .. counter
  local body = '{"username": "' .. name .. '", "email": "' .. name .. '@example.com", "password": "benchmark password"}'
  return wrk.format("POST", "/api/v1/register", {["Content-Type"] = "application/json"}, body)
end
"""


def registration_rate(base: str, connections: int, seconds: int = 10) -> float:
    """Sign-ups per second through HTTP from wrk, whose own CPU is a fraction of an asyncio client's (that CPU would
    come out of the hashers' share, and the raw rate pays for no client)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(SIGN_UPS_LUA)
        script.flush()
        command = [_wrk(), "-t1", f"-c{connections}", f"-d{seconds}s", "-s", script.name, f"{base}/api/v1/register"]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    if " Non-2xx or 3xx responses" in out or "Socket errors" in out:
        raise SystemExit(f"wrk saw failed sign-ups:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]


def sign_up(i: int, run: str) -> dict[str, str]:
    return {"username": f"{run}{i}", "email": f"{run}{i}@example.com", "password": f"benchmark password {i}"}


async def register_many(client: httpx.AsyncClient, count: int, run: str, concurrency: int) -> tuple[float, list[int]]:
    """Send `count` sign-ups, `concurrency` at a time; return the rate and the status codes."""
    gate = asyncio.Semaphore(concurrency)
    codes: list[int] = []

    async def one(i: int) -> None:
        async with gate:
            codes.append((await client.post("/api/v1/register", json=sign_up(i, run))).status_code)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    return count / (time.perf_counter() - started), codes


async def health_under_load(client: httpx.AsyncClient, count: int) -> list[float]:
    """Latencies (ms) of GET /health every 20 ms while sign-ups, 8 at a time (more than the hash workers), keep every
    hasher busy."""
    load = asyncio.create_task(register_many(client, count, "load", concurrency=8))
    latencies: list[float] = []
    await asyncio.sleep(0.5)  # let the hashers fill up before measuring
    while not load.done():
        started = time.perf_counter()
        response = await client.get("/health")
        latencies.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
        await asyncio.sleep(0.02)
    await load
    return latencies


class PeakRss:
    """Samples a process's resident memory in a thread until stopped."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def measure(port: int, pid: int, settings: Settings, database: str) -> None:
    base = f"http://127.0.0.1:{port}"
    await wait_healthy(base, psutil.Process(pid))
    async with httpx.AsyncClient(base_url=base, timeout=300) as client:
        await me_against_the_floor(base, pid, settings, database)
        await register_many(client, 8, "warm", concurrency=8)
        # Raw hashing measured just before and after the HTTP run, so both see the same machine.
        before = await asyncio.to_thread(raw_hash_rate, settings, 48)
        workers = hash_worker_count(settings)
        rate = await asyncio.to_thread(registration_rate, base, max(8, 4 * workers))
        after = await asyncio.to_thread(raw_hash_rate, settings, 48)
        hash_rate = (before + after) / 2
        print(
            f"raw Argon2id hashing ({settings.argon2_memory_kib // 1024} MiB, t={settings.argon2_time_cost}, "
            f"p={settings.argon2_parallelism}) on {os.cpu_count()} cores: {hash_rate:.1f}/s "
            f"(before {before:.1f}, after {after:.1f})"
        )
        print(f"registrations through HTTP: {rate:.1f}/s (ratio to raw hashing {rate / hash_rate:.2f}, target >= 0.95)")

        latencies = sorted(await health_under_load(client, 80))
        p50 = statistics.median(latencies)
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        print(
            f"GET /health under hash load: p50 {p50:.1f} ms, p99 {p99:.1f} ms over {len(latencies)} probes "
            "(target p99 < 30 ms)"
        )

        baseline = psutil.Process(pid).memory_info().rss
        with PeakRss(pid) as rss:
            _, codes = await register_many(client, 200, "burst", concurrency=200)
        answered = {code: codes.count(code) for code in sorted(set(codes))}
        print(
            f"200 sign-ups at once: peak RSS {rss.peak / 2**20:.0f} MiB (idle {baseline / 2**20:.0f} MiB, "
            f"target < 250 MiB); answered {answered}"
        )


WRK = ["-t2", "-c32", "--latency"]
PAIRS = 3


def _wrk() -> str:
    program = shutil.which("wrk")
    if program is None:
        raise SystemExit("wrk is not installed: apt-get install wrk (an asyncio client saturates before the server)")
    return program


def wrk(url: str, token: str, seconds: int = 8) -> tuple[float, float]:
    """Requests per second and p99 latency (ms) of GET `url` with the bearer token, from wrk."""
    command = [_wrk(), *WRK, f"-d{seconds}s", "-H", f"Authorization: Bearer {token}", url]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    p99 = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    if " Non-2xx or 3xx responses" in out:
        raise SystemExit(f"wrk saw failed requests on {url}:\n{out}")
    return rps, p99


def idle_cpu(*pids: int, seconds: float = 10.0) -> list[float]:
    """The share of one core each process used over the same `seconds`, while nothing was asked of them."""
    processes = [psutil.Process(pid) for pid in pids]
    before = [sum(process.cpu_times()[:2]) for process in processes]
    time.sleep(seconds)
    return [(sum(process.cpu_times()[:2]) - used) / seconds for process, used in zip(processes, before, strict=True)]


async def me_against_the_floor(base: str, pid: int, settings: Settings, database: str) -> None:
    """GET /api/v1/me on the service against the reference app (JWTAuth + one asyncpg query), side by side."""
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        await client.post("/api/v1/register", json=sign_up(0, "reader"))
        login = await client.post("/api/v1/login", json={"username": "reader0", "password": "benchmark password 0"})
        token = login.json()["access_token"]
    address = server_address(settings)
    dsn = address.url(database, driver="asyncpg").set(drivername="postgresql").render_as_string(hide_password=False)
    port = free_port()
    reference = subprocess.Popen(
        [sys.executable, "-m", "tests.bench.reference_app", str(port), dsn, settings.jwt_secret.get_secret_value()],
        cwd=PROJECT_ROOT,
    )
    try:
        floor = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=floor, headers={"Authorization": f"Bearer {token}"}) as client:
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/api/v1/me")).status_code == 200:
                        break
                if time.monotonic() > deadline or reference.poll() is not None:
                    raise SystemExit("the reference app did not start")
                await asyncio.sleep(0.1)
        idle, reference_idle = idle_cpu(pid, reference.pid)
        print(f"idle for 10 s: the service used {idle:.2%} of a core, the reference {reference_idle:.2%}")
        for url in (base, floor):  # warm-up: connections opened, caches filled, on both
            await asyncio.to_thread(wrk, f"{url}/api/v1/me", token, 2)
        pairs = []
        for _ in range(PAIRS):  # alternated, so both see the same machine
            service = await asyncio.to_thread(wrk, f"{base}/api/v1/me", token)
            floor_run = await asyncio.to_thread(wrk, f"{floor}/api/v1/me", token)
            pairs.append((service, floor_run))
            print(
                f"GET /api/v1/me: service {service[0]:.0f} rps p99 {service[1]:.1f} ms, "
                f"reference {floor_run[0]:.0f} rps p99 {floor_run[1]:.1f} ms"
            )
        rps_ratio = statistics.median(service[0] / floor_run[0] for service, floor_run in pairs)
        p99_ratio = statistics.median(service[1] / floor_run[1] for service, floor_run in pairs)
        print(
            f"GET /api/v1/me against the floor (JWTAuth + one asyncpg query), median of {PAIRS} pairs: "
            f"{rps_ratio:.2f}x its rps (target >= 0.8), p99 {p99_ratio:.2f}x its p99 (target <= 2)"
        )
    finally:
        reference.terminate()
        reference.wait(timeout=30)


def main() -> None:
    settings = get_settings()
    with scratch_database(settings, "bench") as bench:
        port = free_port()
        # Every request comes from 127.0.0.1: lift the per-address limit, which would answer most of them 429.
        env = {
            **os.environ,
            "API_DB_NAME": bench.api_db_name,
            "API_PORT": str(port),
            "RATE_LIMIT_PER_MINUTE": str(10**6),
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "app", "serve"],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            asyncio.run(measure(port, server.pid, settings, bench.api_db_name))
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
