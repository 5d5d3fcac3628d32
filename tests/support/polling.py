"""Waiting for a live service to answer as expected: polled with a deadline, never slept for."""

from __future__ import annotations

import asyncio
import subprocess
import time

import httpx
import psutil


async def poll(client: httpx.AsyncClient, path: str, status: int, deadline: float = 20.0) -> httpx.Response:
    """GET `path` until it answers `status`, or fail after `deadline` seconds."""
    async with asyncio.timeout(deadline):
        while True:
            try:
                response = await client.get(path)
                if response.status_code == status:
                    return response
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)


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
