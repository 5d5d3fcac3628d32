"""What handlers get injected, one way everywhere: the engine, sessions, one transaction per request, the hashers.

The lifespan puts the runtime objects on `app.state`; these providers are the only readers (besides the JWT
callback, which Litestar calls without injection).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from litestar.datastructures import State
from litestar.di import NamedDependency
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.kit.lockout import LoginLockout
from app.kit.mail import Outbox
from app.kit.metrics import Metrics
from app.kit.passwords import PasswordHashing
from app.repositories.health import SchemaReadiness

# How handlers ask for a session in the request's transaction, the session factory and the hashers.
Session = NamedDependency[AsyncSession]
SessionMaker = NamedDependency[async_sessionmaker[AsyncSession]]
Hashing = NamedDependency[PasswordHashing]


@dataclass
class Drain:
    """Whether this instance is on its way out: not ready for new traffic, still answering what it gets."""

    started: bool = False


def provide_drain(state: State) -> Drain:
    drain: Drain = state.drain
    return drain


def provide_engine(state: State) -> AsyncEngine:
    engine: AsyncEngine = state.engine
    return engine


def provide_session_maker(state: State) -> async_sessionmaker[AsyncSession]:
    """The session factory, for a service that opens short transactions of its own (around a password check)."""
    session_maker: async_sessionmaker[AsyncSession] = state.session_maker
    return session_maker


async def provide_session(state: State) -> AsyncIterator[AsyncSession]:
    """A session in a transaction, committed after the handler returns and rolled back if it raises.

    The pool connection is checked out on the first statement, not here.
    """
    async with provide_session_maker(state)() as session, session.begin():
        yield session


def provide_schema_readiness(state: State) -> SchemaReadiness:
    """Judges the database's schema against this instance's revisions: readiness requires one it can run on."""
    readiness: SchemaReadiness = state.schema_readiness
    return readiness


def provide_hashing(state: State) -> PasswordHashing:
    hashing: PasswordHashing = state.hashing
    return hashing


def provide_lockout(state: State) -> LoginLockout:
    lockout: LoginLockout = state.lockout
    return lockout


def provide_outbox(state: State) -> Outbox:
    outbox: Outbox = state.outbox
    return outbox


def provide_metrics(state: State) -> Metrics:
    metrics: Metrics = state.metrics
    return metrics
