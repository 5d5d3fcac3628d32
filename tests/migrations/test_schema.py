"""The schema the migrations build: names that downgrades can rely on, cascades, timestamps."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from app.repositories.roles import RoleRepository
from app.repositories.users import NewUser, UserRepository
from tests.support.databases import Databases

NAMES = """
SELECT conname AS name FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
WHERE t.relname = ANY($1) AND c.contype <> 'n'  -- PostgreSQL 18 names NOT NULLs itself
UNION SELECT indexname FROM pg_indexes WHERE tablename = ANY($1)
"""
TABLES = ["users", "roles", "user_roles", "user_sessions", "refresh_tokens", "account_tokens"]


async def test_every_constraint_and_index_has_its_conventional_name(pg: Databases, api_db: str) -> None:
    names = {row["name"] for row in await pg.fetch(api_db, NAMES, TABLES)}
    assert names == {
        "pk_users",
        "pk_roles",
        "pk_user_roles",
        "uq_roles_name",
        "uq_users_username_lower",
        "uq_users_email_lower",
        "fk_user_roles_user_id_users",
        "fk_user_roles_role_id_roles",
        "ix_user_roles_role_id_user_id",
        "pk_user_sessions",
        "fk_user_sessions_user_id_users",
        "ix_user_sessions_user_id",
        "pk_refresh_tokens",
        "fk_refresh_tokens_session_id_user_sessions",
        "ix_refresh_tokens_session_id",
        "pk_account_tokens",
        "fk_account_tokens_user_id_users",
        "ix_account_tokens_user_id",
    }


async def test_user_roles_go_with_their_user_or_role(pg: Databases, api_db: str) -> None:
    await pg.fetch(api_db, "INSERT INTO roles (name, description) VALUES ('a', ''), ('b', '')")
    await pg.fetch(
        api_db,
        "INSERT INTO users (username, email, hashed_password) VALUES ('u1', 'u1@x.io', 'h'), ('u2', 'u2@x.io', 'h')",
    )
    await pg.fetch(api_db, "INSERT INTO user_roles SELECT u.id, r.id FROM users u CROSS JOIN roles r")
    await pg.fetch(api_db, "DELETE FROM users WHERE username = 'u1'")
    await pg.fetch(api_db, "DELETE FROM roles WHERE name = 'a'")
    rows = await pg.fetch(
        api_db,
        "SELECT u.username, r.name FROM user_roles ur "
        "JOIN users u ON u.id = ur.user_id JOIN roles r ON r.id = ur.role_id",
    )
    assert [tuple(row) for row in rows] == [("u2", "b")]


async def test_timestamps_are_set_by_the_database_and_updated_on_change(pg: Databases, api_db: str) -> None:
    engine = create_async_engine(pg.address.url(api_db), poolclass=sa.NullPool)
    try:
        async with AsyncSession(engine) as session, session.begin():
            users = UserRepository(session)
            await RoleRepository(session).insert_missing({"user": ""})
            created = await users.create_with_role(NewUser("ann", "ann@x.io", None, "h"), "user")
        async with AsyncSession(engine) as session, session.begin():
            await UserRepository(session).set_active(created.id, False)
    finally:
        await engine.dispose()
    (row,) = await pg.fetch(api_db, "SELECT created_at, updated_at FROM users")
    assert row["created_at"].tzinfo is not None
    assert row["updated_at"] > row["created_at"]
