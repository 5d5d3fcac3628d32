"""The floor `just bench` compares GET /api/v1/me with: a bare Litestar app, JWTAuth and one asyncpg query.

Run as `python -m tests.bench.reference_app PORT DSN SECRET`; it answers GET /api/v1/me for tokens the service issued.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import asyncpg
import uvicorn
from litestar import Litestar, Request, get
from litestar.connection import ASGIConnection
from litestar.security.jwt import JWTAuth, Token

QUERY = (
    "SELECT u.id, u.username, u.email, u.full_name, u.is_active, u.created_at, "
    "(SELECT array_agg(r.name ORDER BY r.name) FROM user_roles ur JOIN roles r ON r.id = ur.role_id "
    "WHERE ur.user_id = u.id) AS roles FROM users u WHERE u.id = $1 AND u.is_active"
)


def build(dsn: str, secret: str) -> Litestar:
    pool: dict[str, asyncpg.Pool] = {}

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        pool["pool"] = await asyncpg.create_pool(dsn, min_size=10, max_size=10)
        yield
        await pool["pool"].close()

    async def retrieve_user(token: Token, connection: ASGIConnection[Any, Any, Any, Any]) -> dict[str, Any] | None:
        row = await pool["pool"].fetchrow(QUERY, int(token.sub))
        return dict(row) if row else None

    @get("/api/v1/me")
    async def me(request: Request[dict[str, Any], Token, Any]) -> dict[str, Any]:
        return request.user

    auth = JWTAuth[dict[str, Any]](
        retrieve_user_handler=retrieve_user, token_secret=secret, default_token_expiration=timedelta(minutes=30)
    )
    return Litestar([me], on_app_init=[auth.on_app_init], lifespan=[lifespan])


if __name__ == "__main__":
    port, dsn, secret = sys.argv[1:4]
    uvicorn.run(
        build(dsn, secret),
        host="127.0.0.1",
        port=int(port),
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )
