"""What every repository is: the statements of one table or two, run in a session whose transaction the caller owns."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession


class Repository:
    """Reads and writes in a session; the caller owns the transaction (repositories never commit)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session


def storable(text: str) -> bool:
    """False for text PostgreSQL cannot hold (it has NUL): no row has it, so a lookup of it finds nothing."""
    return "\x00" not in text
