"""Housekeeping the service does on its own: expired sessions, refresh tokens and mailed tokens are deleted, hourly."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.repositories.account_tokens import AccountTokenRepository
from app.repositories.login_sessions import LoginSessionRepository

logger = logging.getLogger("app.maintenance")
PRUNE_INTERVAL_SECONDS = 3600.0
# The first round waits until startup is long over: instances restarted often still prune, and none of it competes
# with a start (or a test) for the pool.
FIRST_PRUNE_AFTER_SECONDS = 60.0


async def prune_expired(session_maker: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    """Delete what has expired; how many rows of each table went (not counting rows that went with them)."""
    async with session_maker.begin() as session:
        ended, tokens = await LoginSessionRepository(session).prune()
        mailed = await AccountTokenRepository(session).prune()
    return {"user_sessions": ended, "refresh_tokens": tokens, "account_tokens": mailed}


async def prune_periodically(
    session_maker: async_sessionmaker[AsyncSession],
    every: float = PRUNE_INTERVAL_SECONDS,
    first_after: float = FIRST_PRUNE_AFTER_SECONDS,
) -> None:
    """Prune after `first_after` seconds, then every `every` seconds, until cancelled; a failed round is logged and
    the next one tried."""
    await asyncio.sleep(first_after)
    while True:
        try:
            pruned = await prune_expired(session_maker)
        except Exception:
            # A database outage, or a bug: either way the service goes on, and the next round tries again.
            logger.exception("pruning expired sessions failed; next try in %g s", every)
        else:
            if any(pruned.values()):
                logger.info("pruned expired rows: %s", ", ".join(f"{n} from {table}" for table, n in pruned.items()))
        await asyncio.sleep(every)
