"""`just bench`: hashing rate vs registration rate, health latency under load, peak memory of a burst.

Figures from one run on one machine, compared as ratios: these machines are shared and noisy.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
from argon2 import PasswordHasher

from app.db.scratch import scratch_database
from app.services.passwords import lower_thread_priority
from app.settings import PROJECT_ROOT, Settings, get_settings


def raw_hash_rate(settings: Settings, hashes: int) -> float:
    """Hashes per second with the service's parameters, one worker per core."""
    hasher = PasswordHasher(
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism,
    )
    workers = settings.hash_workers or os.cpu_count() or 1
    # The same priority as the service's hashing threads, so the ratio compares like with like.
    with ThreadPoolExecutor(workers, initializer=lower_thread_priority) as pool:
        list(pool.map(hasher.hash, ["warm-up password"] * workers))
        started = time.perf_counter()
        list(pool.map(hasher.hash, [f"password {i}" for i in range(hashes)]))
        return hashes / (time.perf_counter() - started)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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
    """Latencies (ms) of GET /health, one after another, while sign-ups keep the hashers busy."""
    load = asyncio.create_task(register_many(client, count, "load", concurrency=16))
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


async def wait_healthy(base: str, process: psutil.Process | subprocess.Popen[bytes], seconds: float = 600) -> None:
    """Until GET /health answers 200; gives up when the service exits or after `seconds`."""
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        while True:
            running = process.is_running() if isinstance(process, psutil.Process) else process.poll() is None
            if not running:
                raise SystemExit("the service exited before it answered")
            try:
                if (await client.get("/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"the service did not answer within {seconds:.0f} s")
            await asyncio.sleep(0.1)


async def measure(port: int, pid: int, settings: Settings) -> None:
    base = f"http://127.0.0.1:{port}"
    await wait_healthy(base, psutil.Process(pid))
    async with httpx.AsyncClient(base_url=base, timeout=300) as client:
        await register_many(client, 8, "warm", concurrency=8)
        # Raw hashing measured just before and after the HTTP run, so both see the same machine.
        before = await asyncio.to_thread(raw_hash_rate, settings, 24)
        workers = settings.hash_workers or os.cpu_count() or 1
        rate, codes = await register_many(client, 30 * workers, "rate", concurrency=max(8, 4 * workers))
        after = await asyncio.to_thread(raw_hash_rate, settings, 24)
        assert set(codes) == {201}, codes
        hash_rate = (before + after) / 2
        print(
            f"raw Argon2id hashing ({settings.argon2_memory_kib // 1024} MiB, t={settings.argon2_time_cost}, "
            f"p={settings.argon2_parallelism}) on {os.cpu_count()} cores: {hash_rate:.1f}/s "
            f"(before {before:.1f}, after {after:.1f})"
        )
        print(f"registrations through HTTP: {rate:.1f}/s (ratio to raw hashing {rate / hash_rate:.2f}, target >= 0.9)")

        latencies = sorted(await health_under_load(client, 80))
        p50 = statistics.median(latencies)
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        print(
            f"GET /health under hash load: p50 {p50:.1f} ms, p99 {p99:.1f} ms over {len(latencies)} probes "
            "(target p99 < 50 ms)"
        )

        baseline = psutil.Process(pid).memory_info().rss
        with PeakRss(pid) as rss:
            _, codes = await register_many(client, 200, "burst", concurrency=200)
        answered = {code: codes.count(code) for code in sorted(set(codes))}
        print(
            f"200 sign-ups at once: peak RSS {rss.peak / 2**20:.0f} MiB (idle {baseline / 2**20:.0f} MiB, "
            f"target < 300 MiB); answered {answered}"
        )


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
            asyncio.run(measure(port, server.pid, settings))
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
