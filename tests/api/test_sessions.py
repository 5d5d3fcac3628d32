"""Login sessions: refresh tokens and their rotation, logout, the user's sessions, password change, self-deletion."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from datetime import timedelta

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db.engine import create_api_engine
from app.db.provision import connect
from app.http.app import create_app
from app.services.login_sessions import start_session
from app.services.maintenance import prune_expired, prune_periodically
from tests.support.accounts import PASSWORD, bearer, grant_directly, log_in, refresh, sign_up
from tests.support.databases import FAST_HASHING, Databases
from tests.support.live_server import live_server

Client = AsyncTestClient[Litestar]
THIRTY_DAYS = 30 * 24 * 3600


async def test_a_login_starts_a_session_with_a_refresh_token_stored_only_as_a_digest(
    client: Client, pg: Databases, api_db: str
) -> None:
    user_id = await sign_up(client, "alice")
    tokens = await log_in(client, "alice", agent="Firefox on the test bench")
    assert set(tokens) == {"access_token", "token_type", "expires_in", "refresh_token", "refresh_expires_in"}
    assert (tokens["refresh_expires_in"], len(tokens["refresh_token"])) == (THIRTY_DAYS, 43)
    (row,) = await pg.fetch(
        api_db,
        "SELECT s.user_id, s.user_agent, s.created_at, s.last_used_at, s.expires_at - s.created_at AS lifetime, "
        "t.token_hash FROM user_sessions s JOIN refresh_tokens t ON t.session_id = s.id",
    )
    assert (row["user_id"], row["user_agent"]) == (user_id, "Firefox on the test bench")
    assert row["lifetime"].days == 30
    assert row["token_hash"] == hashlib.sha256(tokens["refresh_token"].encode()).hexdigest()
    listed = (await client.get("/api/v1/me/sessions", headers=bearer(tokens))).json()
    assert [(s["user_agent"], s["current"]) for s in listed] == [("Firefox on the test bench", True)]
    assert set(listed[0]) == {"id", "user_agent", "created_at", "last_used_at", "expires_at", "current"}


async def test_a_refresh_rotates_and_a_reused_refresh_token_ends_the_whole_session(
    client: Client, pg: Databases, api_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    await sign_up(client, "alice")
    first = await log_in(client, "alice")
    other_session = await log_in(client, "alice", agent="the phone")
    renewed = await refresh(client, first["refresh_token"])
    assert renewed.status_code == 200, renewed.text
    second = renewed.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["refresh_expires_in"] == THIRTY_DAYS
    assert (await client.get("/api/v1/me", headers=bearer(second))).status_code == 200
    listed = (await client.get("/api/v1/me/sessions", headers=bearer(second))).json()
    (used,) = [s for s in listed if s["current"]]
    assert used["last_used_at"] > used["created_at"]  # the refresh counts as a use
    # The first refresh token again: someone holds a copy. The session ends, the newest tokens with it.
    caplog.set_level(logging.DEBUG)
    reused = await refresh(client, first["refresh_token"])
    assert (reused.status_code, reused.json()["detail"]) == (401, "Invalid or expired refresh token; log in again")
    assert (await refresh(client, second["refresh_token"])).status_code == 401
    for tokens in (first, second):
        assert (await client.get("/api/v1/me", headers=bearer(tokens))).status_code == 401
    assert (await client.get("/api/v1/me", headers=bearer(other_session))).status_code == 200  # another login
    assert first["refresh_token"] not in caplog.text
    assert second["refresh_token"] not in caplog.text
    assert "ended session" in caplog.text
    for junk in ("not a token", "x" * 128):
        assert (await refresh(client, junk)).status_code == 401
    surrogate = b'{"refresh_token": "\\ud800"}'  # valid JSON, not encodable as UTF-8
    assert (await client.post("/api/v1/refresh", content=surrogate)).status_code == 400
    assert (await client.post("/api/v1/refresh", json={"refresh_token": "x" * 129})).status_code == 400
    assert (await client.post("/api/v1/refresh", json={"refresh_token": "x", "user_id": 1})).status_code == 400


async def test_two_refreshes_with_one_token_at_once_end_the_session(client: Client) -> None:
    await sign_up(client, "alice")
    tokens = await log_in(client, "alice")
    answers = await asyncio.gather(*(refresh(client, tokens["refresh_token"]) for _ in range(2)))
    assert sorted(a.status_code for a in answers) == [200, 401]
    (winner,) = [a.json() for a in answers if a.status_code == 200]
    assert (await refresh(client, winner["refresh_token"])).status_code == 401


async def test_expired_sessions_refuse_their_tokens_and_are_pruned(client: Client, pg: Databases, api_db: str) -> None:
    await sign_up(client, "alice")
    stale, fresh = await log_in(client, "alice"), await log_in(client, "alice")
    rotated = (await refresh(client, fresh["refresh_token"])).json()
    listed = (await client.get("/api/v1/me/sessions", headers=bearer(rotated))).json()
    (fresh_session,) = [uuid.UUID(s["id"]) for s in listed if s["current"]]
    await log_in(client, "alice")  # one more session, to expire later
    await pg.fetch(
        api_db,
        "UPDATE user_sessions SET expires_at = now() - interval '1 second' WHERE id = "
        "(SELECT session_id FROM refresh_tokens WHERE token_hash = $1)",
        hashlib.sha256(stale["refresh_token"].encode()).hexdigest(),
    )
    assert (await refresh(client, stale["refresh_token"])).status_code == 401
    assert (await client.get("/api/v1/me", headers=bearer(stale))).status_code == 401
    # The rotated token of the live session is kept while it could still be replayed, then pruned too.
    await pg.fetch(api_db, "UPDATE refresh_tokens SET expires_at = now() WHERE rotated_at IS NOT NULL")
    await pg.fetch(api_db, "UPDATE account_tokens SET expires_at = now()")  # the sign-up's verification token
    engine = create_api_engine(pg.address, pg.settings(api_db))
    sessions = async_sessionmaker(engine, class_=AsyncSession)
    try:
        assert await prune_expired(sessions) == {"user_sessions": 1, "refresh_tokens": 1, "account_tokens": 1}
        await pg.fetch(api_db, "UPDATE user_sessions SET expires_at = now() WHERE id <> $1", fresh_session)
        # The service's own rounds do the same.
        pruning = asyncio.create_task(prune_periodically(sessions, first_after=0))
        async with asyncio.timeout(10):
            while await pg.fetch(api_db, "SELECT 1 FROM user_sessions WHERE id <> $1", fresh_session):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        pruning.cancel()
    finally:
        await engine.dispose()
    assert [r[0] for r in await pg.fetch(api_db, "SELECT count(*) FROM refresh_tokens")] == [1]
    assert (await refresh(client, rotated["refresh_token"])).status_code == 200


async def test_logout_ends_this_session_at_once_on_every_instance(pg: Databases, api_db: str) -> None:
    settings = pg.settings(api_db, **FAST_HASHING)
    async with AsyncTestClient(create_app(settings)) as one, AsyncTestClient(create_app(settings)) as other:
        await sign_up(one, "alice")
        laptop, phone = await log_in(one, "alice"), await log_in(one, "alice")
        assert (await other.get("/api/v1/me", headers=bearer(laptop))).status_code == 200
        assert (await one.post("/api/v1/logout", headers=bearer(laptop))).status_code == 204
        assert (await other.get("/api/v1/me", headers=bearer(laptop))).status_code == 401
        assert (await refresh(other, laptop["refresh_token"])).status_code == 401
        assert (await other.get("/api/v1/me", headers=bearer(phone))).status_code == 200
        assert (await one.post("/api/v1/logout", headers=bearer(laptop))).status_code == 401
        assert (await one.post("/api/v1/logout", json={"every": True}, headers=bearer(phone))).status_code == 400


async def test_logout_all_ends_every_session_of_the_user_only(client: Client) -> None:
    await sign_up(client, "alice")
    await sign_up(client, "bob")
    sessions = [await log_in(client, "alice", agent=f"device {n}") for n in range(3)]
    bob = await log_in(client, "bob")
    listed = (await client.get("/api/v1/me/sessions", headers=bearer(sessions[1]))).json()
    assert [(s["user_agent"], s["current"]) for s in listed] == [
        ("device 2", False),
        ("device 1", True),
        ("device 0", False),
    ]
    assert (await client.post("/api/v1/logout", json={"all": True}, headers=bearer(sessions[0]))).status_code == 204
    for tokens in sessions:
        assert (await client.get("/api/v1/me", headers=bearer(tokens))).status_code == 401
        assert (await refresh(client, tokens["refresh_token"])).status_code == 401
    assert (await client.get("/api/v1/me/sessions", headers=bearer(bob))).json()[0]["current"] is True


async def test_a_password_change_needs_the_current_password_and_ends_the_other_sessions(
    client: Client, pg: Databases, api_db: str
) -> None:
    await sign_up(client, "alice")
    this, other = await log_in(client, "alice"), await log_in(client, "alice")
    (before,) = await pg.fetch(api_db, "SELECT hashed_password FROM users")
    change = {"current_password": "not the password", "new_password": "a new secret"}
    wrong = await client.post("/api/v1/me/password", json=change, headers=bearer(this))
    assert (wrong.status_code, wrong.json()["detail"]) == (403, "The password is wrong")
    short = {"current_password": PASSWORD, "new_password": "short"}
    assert (await client.post("/api/v1/me/password", json=short, headers=bearer(this))).status_code == 400
    assert await pg.fetch(api_db, "SELECT hashed_password FROM users") == [before]
    assert (await client.get("/api/v1/me", headers=bearer(other))).status_code == 200

    change = {"current_password": PASSWORD, "new_password": "a new secret"}
    assert (await client.post("/api/v1/me/password", json=change, headers=bearer(this))).status_code == 204
    assert (await client.get("/api/v1/me", headers=bearer(this))).status_code == 200
    assert (await refresh(client, this["refresh_token"])).status_code == 200
    assert (await client.get("/api/v1/me", headers=bearer(other))).status_code == 401
    assert (await refresh(client, other["refresh_token"])).status_code == 401
    refused = await client.post("/api/v1/login", json={"username": "alice", "password": PASSWORD})
    assert refused.status_code == 401
    await log_in(client, "alice", "a new secret")


async def test_users_delete_themselves_with_their_roles_and_sessions(
    client: Client, pg: Databases, api_db: str
) -> None:
    user_id = await sign_up(client, "alice")
    tokens = await log_in(client, "alice")
    wrong = await client.request("DELETE", "/api/v1/me", json={"password": "not it"}, headers=bearer(tokens))
    assert wrong.status_code == 403
    assert (await client.request("DELETE", "/api/v1/me", headers=bearer(tokens))).status_code == 400
    deleted = await client.request("DELETE", "/api/v1/me", json={"password": PASSWORD}, headers=bearer(tokens))
    assert deleted.status_code == 204
    assert (await client.get("/api/v1/me", headers=bearer(tokens))).status_code == 401
    assert (await refresh(client, tokens["refresh_token"])).status_code == 401
    for table in ("users", "user_roles", "user_sessions", "refresh_tokens"):
        assert await pg.fetch(api_db, f"SELECT * FROM {table}") == [], table
    assert (await client.post("/api/v1/login", json={"username": "alice", "password": PASSWORD})).status_code == 401
    assert await sign_up(client, "alice") != user_id  # the name is free again


async def test_the_last_active_admin_cannot_delete_itself(client: Client, pg: Databases, api_db: str) -> None:
    root, other = await sign_up(client, "root"), await sign_up(client, "other")
    await grant_directly(pg, api_db, root, "admin")
    tokens = await log_in(client, "root")
    refused = await client.request("DELETE", "/api/v1/me", json={"password": PASSWORD}, headers=bearer(tokens))
    assert refused.status_code == 409
    assert refused.json()["detail"].startswith("'root' is the last active admin")
    assert (await client.get("/api/v1/me", headers=bearer(tokens))).status_code == 200
    await grant_directly(pg, api_db, other, "admin")
    deleted = await client.request("DELETE", "/api/v1/me", json={"password": PASSWORD}, headers=bearer(tokens))
    assert deleted.status_code == 204


async def test_the_document_covers_the_account_endpoints(client: Client) -> None:
    document = (await client.get("/schema/openapi.json")).json()
    paths = document["paths"]
    expected = {
        ("/api/v1/refresh", "post"): {"200", "400", "401", "429", "503"},
        ("/api/v1/logout", "post"): {"204", "400", "401", "503"},
        ("/api/v1/me/sessions", "get"): {"200", "401", "503"},
        ("/api/v1/me/password", "post"): {"204", "400", "401", "403", "429", "503"},
        ("/api/v1/me", "delete"): {"204", "400", "401", "403", "409", "429", "503"},
        ("/api/v1/login", "post"): {"200", "400", "401", "403", "429", "503"},
        ("/api/v1/password-reset", "post"): {"202", "400", "429", "503"},
        ("/api/v1/password-reset/confirm", "post"): {"204", "400", "429", "503"},
        ("/api/v1/verify-email", "post"): {"204", "400", "429", "503"},
        ("/api/v1/verify-email/resend", "post"): {"202", "400", "429", "503"},
    }
    public = {"/api/v1/refresh", "/api/v1/login", "/api/v1/password-reset", "/api/v1/password-reset/confirm"}
    public |= {"/api/v1/verify-email", "/api/v1/verify-email/resend"}
    for (path, method), statuses in expected.items():
        operation = paths[path][method]
        assert set(operation["responses"]) >= statuses, (path, method)
        assert bool(operation.get("security")) is (path not in public), (path, method)
    assert paths["/api/v1/logout"]["post"]["requestBody"]["required"] is False
    schemas = document["components"]["schemas"]
    for name in (
        "RefreshRequest",
        "LogoutRequest",
        "PasswordChange",
        "AccountDeletion",
        "EmailRequest",
        "PasswordReset",
    ):
        assert schemas[name]["additionalProperties"] is False, name
    assert schemas["PasswordChange"]["properties"]["new_password"]["minLength"] == 8
    assert {"refresh_token", "refresh_expires_in"} <= set(schemas["AccessToken"]["required"])
    assert "email_verified" in schemas["UserDetail"]["required"]
    assert schemas["PasswordReset"]["properties"]["new_password"]["maxLength"] == 128


async def test_a_login_whose_password_was_changed_while_it_was_checked_starts_no_session(
    client: Client, pg: Databases, api_db: str
) -> None:
    user_id = await sign_up(client, "alice")
    (verified,) = await pg.fetch(api_db, "SELECT hashed_password FROM users WHERE id = $1", user_id)
    # A reset lands between the password check and the new session: the session must not outlive the reset.
    await pg.fetch(api_db, "UPDATE users SET hashed_password = 'reset meanwhile' WHERE id = $1", user_id)
    engine = create_api_engine(pg.address, pg.settings(api_db))
    sessions = async_sessionmaker(engine, class_=AsyncSession)
    lifetime = timedelta(days=1)
    try:
        assert await start_session(sessions, user_id, None, lifetime, password_hash=verified[0]) is None
        assert await pg.fetch(api_db, "SELECT count(*) FROM user_sessions") == [(0,)]
        assert await start_session(sessions, user_id, None, lifetime, password_hash="reset meanwhile") is not None
    finally:
        await engine.dispose()


async def test_a_flood_of_reads_waits_its_turn_at_most_the_pool_time_out_then_gets_503(
    pg: Databases, api_db: str
) -> None:
    # Two connections for the authenticated read (2 x DB_POOL_SIZE), each request waits at most half a second.
    settings = pg.settings(api_db, **FAST_HASHING, db_pool_size=1, db_pool_timeout=0.5)
    async with live_server(create_app(settings)) as client:
        await sign_up(client, "alice")
        reader = bearer(await log_in(client, "alice"))
        blocker = await connect(pg.address, api_db)
        try:
            async with blocker.transaction():
                await blocker.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")  # every read of users waits
                started = time.monotonic()
                flood = await asyncio.gather(*(client.get("/api/v1/me", headers=reader) for _ in range(6)))
                waited = time.monotonic() - started
        finally:
            await blocker.close()
        assert [response.status_code for response in flood] == [503] * 6
        assert all(response.headers["retry-after"] for response in flood)
        # Two served at a time, each given up after 0.5 s: three turns, not six requests waiting in a line.
        assert waited < 3.0
        assert (await client.get("/api/v1/me", headers=reader)).status_code == 200
