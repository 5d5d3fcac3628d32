"""An instance's presence in the registry: registered at startup, a heartbeat while it runs, gone when it stops.

A contract revision waits while an instance of an older release is present (see migrations/rollout.py), so that the
code relying on what it removes has stopped first. An instance that dies without a word expires after three beats.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Collection
from datetime import timedelta

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.repositories.instances import InstanceRepository

logger = logging.getLogger("app.presence")
BEATS_BEFORE_EXPIRY = 3


class Presence:
    """This instance's row in the registry, kept alive by `keep_beating`."""

    def __init__(self, session_maker: async_sessionmaker[AsyncSession], heads: Collection[str], every: float) -> None:
        self.session_maker = session_maker
        self.id = uuid.uuid4()
        self.heads = "+".join(sorted(heads))
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.every = every
        self.lifetime = timedelta(seconds=every * BEATS_BEFORE_EXPIRY)

    async def register(self) -> None:
        async with self.session_maker.begin() as session:
            await InstanceRepository(session).register(self.id, self.heads, self.host, self.pid, self.lifetime)

    async def keep_beating(self) -> None:
        """Beat every `every` seconds until cancelled; a failed beat is logged and the next one tried."""
        while True:
            await asyncio.sleep(self.every)
            try:
                async with self.session_maker.begin() as session:
                    registry = InstanceRepository(session)
                    if not await registry.beat(self.id, self.lifetime):
                        # Expired while the database was away: come back, or a contract could pass this instance by.
                        await registry.register(self.id, self.heads, self.host, self.pid, self.lifetime)
                    await registry.forget_expired()
            except Exception as exc:
                logger.warning("heartbeat failed (%s); next try in %g s", type(exc).__name__, self.every)

    async def leave(self) -> None:
        """Take this instance out of the registry (best effort: otherwise its row expires)."""
        try:
            async with self.session_maker.begin() as session:
                await InstanceRepository(session).leave(self.id)
        except Exception:
            logger.warning("could not leave the instance registry; the entry expires in %s", self.lifetime)
