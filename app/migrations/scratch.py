"""Throw-away databases beside the API database, for checks that must not depend on its state."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

from app.db.catalog import quote_ident
from app.db.provision import connect, ensure_database
from app.db.server import direct_address
from app.settings import Settings


@contextmanager
def scratch_database(
    settings: Settings, purpose: str, run: Callable[[Coroutine[Any, Any, Any]], Any] = asyncio.run
) -> Iterator[Settings]:
    """Settings for an empty database created for the block and dropped after it; `run` runs the async steps."""
    name = f"{settings.api_db_name[:40]}__{purpose}_{os.getpid()}"
    address = direct_address(settings)
    run(ensure_database(address, name))
    try:
        yield settings.model_copy(update={"api_db_name": name})
    finally:
        run(_drop(settings, name))


async def _drop(settings: Settings, name: str) -> None:
    conn = await connect(direct_address(settings), "postgres")
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
    finally:
        await conn.close()
