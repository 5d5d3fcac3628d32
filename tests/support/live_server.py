"""The app under a real uvicorn in the test's event loop, for tests where requests must truly overlap.

Litestar's test client runs each request to completion before the next one starts, so it cannot race.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import uvicorn
from litestar import Litestar

STARTUP_DEADLINE = 30.0


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@asynccontextmanager
async def live_server(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """Serve `app` on a free loopback port; yield an HTTP client for it; shut down after the block."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(STARTUP_DEADLINE):
            while not server.started:
                if task.done():
                    raise RuntimeError("the app did not start") from task.exception()
                await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            yield client
    finally:
        server.should_exit = True
        await task
        sock.close()
