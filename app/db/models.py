"""SQLModel tables of the API database; Alembic's autogenerate reads them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

# Stable names for every index and constraint, so migrations can drop them by name.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def set_by_database(*, on_update: bool = False) -> Any:
    """A NOT NULL timestamptz the database sets to now() on insert (and on every UPDATE with `on_update`).

    None in a new model object until the row is read back: the database's clock decides, never an instance's.
    """
    now = {"server_default": sa.func.now(), **({"onupdate": sa.func.now()} if on_update else {})}
    return Field(default=None, sa_type=sa.DateTime(timezone=True), sa_column_kwargs={**now, "nullable": False})


# Ids are PostgreSQL `integer`s: a larger number can name no row and would fail the query.
MAX_ID = 2**31 - 1


class DBRole(SQLModel, table=True):
    """A named role such as `user` or `admin`."""

    __tablename__ = "roles"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=50, unique=True)
    description: str = Field(default="", max_length=255)


class DBUser(SQLModel, table=True):
    """A registered user of the API; never holds a plain password."""

    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=50)
    email: str = Field(max_length=320)
    full_name: str | None = Field(default=None, max_length=100)
    phone_number: str | None = Field(default=None, max_length=20)
    hashed_password: str = Field(max_length=255)
    is_active: bool = Field(default=True, sa_column_kwargs={"server_default": sa.true()})
    # When the owner proved the address is theirs (a verification or a password reset mail); null: not yet.
    email_verified_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
    created_at: datetime | None = set_by_database()
    updated_at: datetime | None = set_by_database(on_update=True)


class UserRoleLink(SQLModel, table=True):
    """Which roles a user holds; rows go with their user or role."""

    __tablename__ = "user_roles"

    # The holders of a role in id order, a page at a time: a range scan of this index, however deep the page.
    __table_args__ = (sa.Index("ix_user_roles_role_id_user_id", "role_id", "user_id"),)

    user_id: int = Field(foreign_key="users.id", primary_key=True, ondelete="CASCADE")
    role_id: int = Field(foreign_key="roles.id", primary_key=True, ondelete="CASCADE")


class DBLoginSession(SQLModel, table=True):
    """A login: its refresh tokens and the access tokens issued with them are valid while this row exists."""

    __tablename__ = "user_sessions"

    id: uuid.UUID = Field(primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True, ondelete="CASCADE")
    user_agent: str | None = Field(default=None, max_length=255)
    created_at: datetime | None = set_by_database()
    # The last login or refresh: authenticated requests do not write, so this lags by up to one access token.
    last_used_at: datetime | None = set_by_database()
    # When the newest refresh token expires; each refresh moves it on.
    expires_at: datetime = Field(sa_type=sa.DateTime(timezone=True))


class DBRefreshToken(SQLModel, table=True):
    """A refresh token of a session, by its SHA-256: the newest one refreshes, a rotated one ends the session."""

    __tablename__ = "refresh_tokens"

    token_hash: str = Field(primary_key=True, max_length=64)
    session_id: uuid.UUID = Field(foreign_key="user_sessions.id", index=True, ondelete="CASCADE")
    created_at: datetime | None = set_by_database()
    expires_at: datetime = Field(sa_type=sa.DateTime(timezone=True))
    # Set when a refresh replaced this token: presenting it again means it was copied.
    rotated_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))


class DBAccountToken(SQLModel, table=True):
    """A single-use token mailed to a user (email verification, password reset), by its SHA-256."""

    __tablename__ = "account_tokens"

    token_hash: str = Field(primary_key=True, max_length=64)
    user_id: int = Field(foreign_key="users.id", index=True, ondelete="CASCADE")
    purpose: str = Field(max_length=20)
    created_at: datetime | None = set_by_database()
    expires_at: datetime = Field(sa_type=sa.DateTime(timezone=True))
    used_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))


class DBInstance(SQLModel, table=True):
    """A running instance of the service, while its heartbeat lasts: the release it runs, and where.

    A contract revision waits while an instance of an older release is here; the row goes when the instance stops,
    or expires when it stops beating.
    """

    __tablename__ = "api_instances"

    id: uuid.UUID = Field(primary_key=True)
    # The release's head revisions, `+`-joined: what its code knows of the schema.
    heads: str = Field(max_length=200)
    host: str = Field(max_length=255)
    pid: int
    started_at: datetime | None = set_by_database()
    expires_at: datetime = Field(sa_type=sa.DateTime(timezone=True))


# Uniqueness ignoring case is decided by the database, not by a check before the insert.
USERNAME_UNIQUE = sa.Index("uq_users_username_lower", sa.func.lower(DBUser.username), unique=True)
EMAIL_UNIQUE = sa.Index("uq_users_email_lower", sa.func.lower(DBUser.email), unique=True)

API_TABLES = frozenset(SQLModel.metadata.tables)
