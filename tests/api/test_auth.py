"""Login, tokens, the current user, role management and the first admin."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from argon2 import PasswordHasher
from litestar import Litestar
from litestar.testing import AsyncTestClient
from pydantic import ValidationError
from redis import Redis
from sqlmodel.ext.asyncio.session import AsyncSession

from app.cli import main
from app.db.engine import create_api_engine
from app.db.provision import connect
from app.errors import HashingOverloadedError, LastAdminError
from app.http.app import create_app
from app.services.role_admin import revoke_role
from app.settings import EXAMPLE_JWT_SECRET, Settings
from tests.support.accounts import PASSWORD, bearer, grant_directly, log_in, sign_up
from tests.support.databases import FAST_HASHING, Databases, run_app

Client = AsyncTestClient[Litestar]


async def signed_in(client: Client, name: str, password: str = PASSWORD) -> dict[str, str]:
    """The Authorization header of a fresh login as `name`."""
    return bearer(await log_in(client, name, password))


async def test_login_by_username_or_email_then_me(client: Client) -> None:
    await sign_up(client, "alice")
    response = await client.post("/api/v1/login", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 200
    body = response.json()
    assert (body["token_type"], body["expires_in"]) == ("bearer", 30 * 60)
    by_email = await signed_in(client, "ALICE@example.com")
    me = await client.get("/api/v1/me", headers=by_email)
    assert me.status_code == 200
    assert (me.json()["username"], me.json()["roles"], me.json()["is_active"]) == ("alice", ["user"], True)


async def test_wrong_password_and_unknown_user_get_the_same_401(client: Client) -> None:
    await sign_up(client, "alice")
    wrong = await client.post("/api/v1/login", json={"username": "alice", "password": "not the password"})
    unknown = await client.post("/api/v1/login", json={"username": "nobody", "password": PASSWORD})
    assert wrong.status_code == unknown.status_code == 401
    assert (
        wrong.json()
        == unknown.json()
        == {
            "type": "about:blank",
            "title": "Unauthorized",
            "status": 401,
            "detail": "Invalid username or password",
        }
    )
    assert wrong.headers["content-type"] == "application/problem+json"


async def test_unknown_users_cost_a_verification_too(pg: Databases, api_db: str) -> None:
    slow = {**FAST_HASHING, "argon2_time_cost": 60}  # a hash long enough to dominate the request
    app = create_app(pg.settings(api_db, **slow))
    async with AsyncTestClient(app) as client:
        started = time.perf_counter()
        app.state.hashing.hasher.hash("a lone hash, timed beside the request")
        one_hash = time.perf_counter() - started
        started = time.perf_counter()
        response = await client.post("/api/v1/login", json={"username": "nobody", "password": "wrong password"})
        elapsed = time.perf_counter() - started
    assert response.status_code == 401
    # A lone hash, timed just before on the same machine, is many times the rest of the request: half of it means
    # a hash was computed.
    assert elapsed > 0.5 * one_hash, (elapsed, one_hash)


async def test_inactive_users_cannot_log_in_and_their_tokens_stop(client: Client, pg: Databases, api_db: str) -> None:
    user_id = await sign_up(client, "alice")
    headers = await signed_in(client, "alice")
    await pg.fetch(api_db, "UPDATE users SET is_active = false WHERE id = $1", user_id)
    refused = await client.post("/api/v1/login", json={"username": "alice", "password": PASSWORD})
    assert refused.status_code == 401
    assert (await client.get("/api/v1/me", headers=headers)).status_code == 401


async def test_an_old_hash_is_upgraded_on_login(client: Client, pg: Databases, api_db: str) -> None:
    user_id = await sign_up(client, "alice")
    old = PasswordHasher(time_cost=1, memory_cost=512, parallelism=1).hash(PASSWORD)
    await pg.fetch(api_db, "UPDATE users SET hashed_password = $1 WHERE id = $2", old, user_id)
    await signed_in(client, "alice")
    (row,) = await pg.fetch(api_db, "SELECT hashed_password FROM users WHERE id = $1", user_id)
    assert row[0] != old
    assert f"m={FAST_HASHING['argon2_memory_kib']},t={FAST_HASHING['argon2_time_cost']}" in row[0]


async def test_a_login_while_hashing_is_saturated_keeps_the_old_hash_for_later(
    client: Client, pg: Databases, api_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_id = await sign_up(client, "alice")
    old = PasswordHasher(time_cost=1, memory_cost=512, parallelism=1).hash(PASSWORD)
    await pg.fetch(api_db, "UPDATE users SET hashed_password = $1 WHERE id = $2", old, user_id)

    async def saturated(password: str) -> str:
        raise HashingOverloadedError(retry_after=5)

    monkeypatch.setattr(client.app.state.hashing, "hash", saturated)
    await signed_in(client, "alice")  # the password is right: the upgrade can wait, the user should not
    (row,) = await pg.fetch(api_db, "SELECT hashed_password FROM users WHERE id = $1", user_id)
    assert row[0] == old


def forged(secret: str, sub: str, expires: datetime) -> dict[str, str]:
    claims = {"sub": sub, "exp": int(expires.timestamp()), "iat": int(time.time()) - 3600}
    return {"Authorization": f"Bearer {jwt.encode(claims, secret, algorithm='HS256')}"}


@pytest.mark.parametrize("case", ["missing", "malformed", "expired", "other key"])
async def test_me_refuses_a_bad_token(client: Client, case: str) -> None:
    user_id = await sign_up(client, "alice")
    soon, past = datetime.now(UTC) + timedelta(minutes=5), datetime.now(UTC) - timedelta(minutes=5)
    headers = {
        "missing": {},
        "malformed": {"Authorization": "Bearer not.a.token"},
        "expired": forged(EXAMPLE_JWT_SECRET, str(user_id), past),
        "other key": forged("another-secret-of-at-least-32-characters!!", str(user_id), soon),
    }[case]
    response = await client.get("/api/v1/me", headers=headers)
    assert response.status_code == 401
    assert (response.json()["status"], response.headers["content-type"]) == (401, "application/problem+json")


@pytest.fixture
async def people(client: Client, pg: Databases, api_db: str) -> dict[str, Any]:
    """An admin, a moderator and a regular user, each logged in."""
    ids = {name: await sign_up(client, name) for name in ("root", "mod", "joe")}
    await grant_directly(pg, api_db, ids["root"], "admin")
    await grant_directly(pg, api_db, ids["mod"], "moderator")
    return {"ids": ids, "auth": {name: await signed_in(client, name) for name in ids}}


async def test_admin_lists_users_a_page_at_a_time_and_by_role(client: Client, people: dict[str, Any]) -> None:
    admin, ids = people["auth"]["root"], people["ids"]
    first = (await client.get("/api/v1/users?limit=2", headers=admin)).json()
    assert [u["username"] for u in first["items"]] == ["root", "mod"]
    assert first["next"] == ids["mod"]
    second = (await client.get(f"/api/v1/users?limit=2&after={first['next']}", headers=admin)).json()
    assert ([u["username"] for u in second["items"]], second["next"]) == (["joe"], None)
    exactly = (await client.get("/api/v1/users?limit=3", headers=admin)).json()
    assert (len(exactly["items"]), exactly["next"]) == (3, None)  # a full last page says it is the last
    holders = (await client.get("/api/v1/users?role=user&limit=1", headers=admin)).json()
    assert ([u["username"] for u in holders["items"]], holders["next"]) == (["root"], ids["root"])
    holders = (await client.get(f"/api/v1/users?role=user&limit=5&after={ids['root']}", headers=admin)).json()
    assert [u["username"] for u in holders["items"]] == ["mod", "joe"]
    admins = (await client.get("/api/v1/users?role=admin", headers=admin)).json()
    assert ([u["username"] for u in admins["items"]], admins["next"]) == (["root"], None)
    assert (await client.get("/api/v1/users?role=nobody", headers=admin)).json() == {"items": [], "next": None}
    assert "hashed_password" not in str(first)
    for bad in ("limit=0", "limit=101", "after=-1"):
        assert (await client.get(f"/api/v1/users?{bad}", headers=admin)).status_code == 400


async def test_moderator_lists_but_cannot_change_roles(client: Client, people: dict[str, Any]) -> None:
    moderator, joe = people["auth"]["mod"], people["ids"]["joe"]
    assert (await client.get("/api/v1/users", headers=moderator)).status_code == 200
    assert (await client.put(f"/api/v1/users/{joe}/roles/moderator", headers=moderator)).status_code == 403
    assert (await client.patch(f"/api/v1/users/{joe}", json={"is_active": False}, headers=moderator)).status_code == 403


async def test_a_user_cannot_grant_itself_admin(
    client: Client, people: dict[str, Any], pg: Databases, api_db: str
) -> None:
    joe, joe_id = people["auth"]["joe"], people["ids"]["joe"]
    assert (await client.get("/api/v1/users", headers=joe)).status_code == 403
    response = await client.put(f"/api/v1/users/{joe_id}/roles/admin", headers=joe)
    assert response.status_code == 403
    assert response.json()["detail"] == "This needs the role admin"
    roles = await pg.fetch(
        api_db, "SELECT r.name FROM user_roles u JOIN roles r ON r.id = u.role_id WHERE user_id=$1", joe_id
    )
    assert [r[0] for r in roles] == ["user"]


async def test_admin_grants_revokes_and_deactivates(client: Client, people: dict[str, Any]) -> None:
    admin, joe, joe_id = people["auth"]["root"], people["auth"]["joe"], people["ids"]["joe"]
    granted = await client.put(f"/api/v1/users/{joe_id}/roles/moderator", headers=admin)
    assert (granted.status_code, granted.json()["roles"]) == (200, ["moderator", "user"])
    again = await client.put(f"/api/v1/users/{joe_id}/roles/moderator", headers=admin)
    assert again.json()["roles"] == ["moderator", "user"]
    assert (await client.get("/api/v1/users", headers=joe)).status_code == 200  # the new role counts at once
    revoked = await client.delete(f"/api/v1/users/{joe_id}/roles/moderator", headers=admin)
    assert (revoked.status_code, revoked.json()["roles"]) == (200, ["user"])
    assert (await client.put(f"/api/v1/users/{joe_id}/roles/owner", headers=admin)).status_code == 404
    assert (await client.put("/api/v1/users/9999/roles/admin", headers=admin)).status_code == 404
    # The document says boolean: 0 and "false" are refused, not taken for false.
    for lax in (0, "false"):
        refused = await client.patch(f"/api/v1/users/{joe_id}", json={"is_active": lax}, headers=admin)
        assert (refused.status_code, refused.json()["errors"][0]["key"]) == (400, "is_active")
    assert (await client.get("/api/v1/me", headers=joe)).status_code == 200
    off = await client.patch(f"/api/v1/users/{joe_id}", json={"is_active": False}, headers=admin)
    assert (off.status_code, off.json()["is_active"]) == (200, False)
    assert (await client.get("/api/v1/me", headers=joe)).status_code == 401
    assert (await client.patch(f"/api/v1/users/{joe_id}", json={"roles": ["admin"]}, headers=admin)).status_code == 400


async def test_the_last_active_admin_cannot_be_demoted_or_deactivated(
    client: Client, people: dict[str, Any], pg: Databases, api_db: str
) -> None:
    admin, root, mod = people["auth"]["root"], people["ids"]["root"], people["ids"]["mod"]
    # An admin who cannot log in manages nothing: it does not count.
    await grant_directly(pg, api_db, mod, "admin")
    await pg.fetch(api_db, "UPDATE users SET is_active = false WHERE id = $1", mod)
    demoted = await client.delete(f"/api/v1/users/{root}/roles/admin", headers=admin)
    assert demoted.status_code == 409
    assert demoted.json()["detail"].startswith("'root' is the last active admin; make another user admin first")
    assert (await client.patch(f"/api/v1/users/{root}", json={"is_active": False}, headers=admin)).status_code == 409
    assert (await client.get("/api/v1/me", headers=admin)).json()["roles"] == ["admin", "user"]
    assert (await client.patch(f"/api/v1/users/{mod}", json={"is_active": True}, headers=admin)).status_code == 200
    assert (await client.delete(f"/api/v1/users/{root}/roles/admin", headers=admin)).status_code == 200


async def test_a_demotion_waits_for_a_concurrent_one_and_then_keeps_the_last_admin(
    people: dict[str, Any], pg: Databases, api_db: str
) -> None:
    ids = people["ids"]
    await grant_directly(pg, api_db, ids["mod"], "admin")
    engine = create_api_engine(pg.address, pg.settings(api_db))

    async def demote_root() -> None:
        async with AsyncSession(engine) as session, session.begin():
            await revoke_role(session, ids["root"], "admin")

    # Another admin change in flight: it holds the admin role while it demotes `mod`.
    other, observer = await connect(pg.address, api_db), await connect(pg.address, api_db)
    try:
        async with other.transaction():
            await other.execute("SELECT id FROM roles WHERE name = 'admin' FOR NO KEY UPDATE")
            demotion = asyncio.ensure_future(demote_root())
            waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'"
            deadline = time.monotonic() + 10
            # Asked outside `other`'s transaction, which would see one snapshot of pg_stat_activity throughout.
            while await observer.fetchval(waiting, api_db) < 1:
                assert not demotion.done(), "the demotion went ahead without waiting for the other admin change"
                assert time.monotonic() < deadline, "the demotion never waited for the admin role"
                await asyncio.sleep(0.02)
            await other.execute(
                "DELETE FROM user_roles WHERE user_id = $1 AND role_id = (SELECT id FROM roles WHERE name = 'admin')",
                ids["mod"],
            )
        with pytest.raises(LastAdminError):
            await demotion
    finally:
        await other.close()
        await observer.close()
        await engine.dispose()
    admins = "SELECT user_id FROM user_roles JOIN roles r ON r.id = role_id WHERE r.name = 'admin'"
    assert [row[0] for row in await pg.fetch(api_db, admins)] == [ids["root"]]


async def test_numbers_beyond_any_row_are_a_clear_400(client: Client, people: dict[str, Any]) -> None:
    admin, too_big = people["auth"]["root"], 2**31
    for response in [
        await client.get(f"/api/v1/users/{too_big}", headers=admin),
        await client.put(f"/api/v1/users/{too_big}/roles/admin", headers=admin),
        await client.patch(f"/api/v1/users/{2**63}", json={"is_active": False}, headers=admin),
        await client.get(f"/api/v1/users?after={10**18}", headers=admin),
    ]:
        assert response.status_code == 400, response.text
        assert response.json()["status"] == 400
    soon = datetime.now(UTC) + timedelta(minutes=5)
    assert (await client.get("/api/v1/me", headers=forged(EXAMPLE_JWT_SECRET, str(too_big), soon))).status_code == 401


async def test_nul_characters_are_refused_and_change_nothing(
    client: Client, people: dict[str, Any], pg: Databases, api_db: str
) -> None:
    admin = people["auth"]["root"]
    sign_up = {"username": "nul", "email": "nul@example.com", "password": PASSWORD, "full_name": "a\x00b"}
    refused_early = await client.post("/api/v1/register", json=sign_up)
    assert refused_early.json()["errors"][0]["key"] == "full_name"  # before the costly hash, not by PostgreSQL after it
    # No name can hold NUL, so logging in with one is logging in as nobody.
    nobody = await client.post("/api/v1/login", json={"username": "root\x00", "password": PASSWORD})
    assert (nobody.status_code, nobody.json()["detail"]) == (401, "Invalid username or password")
    for response in [
        refused_early,
        await client.put(f"/api/v1/users/{people['ids']['joe']}/roles/ad%00min", headers=admin),
        await client.get("/api/v1/users?role=%00", headers=admin),
    ]:
        assert response.status_code == 400, response.text
    assert [row[0] for row in await pg.fetch(api_db, "SELECT username FROM users ORDER BY id")] == [
        "root",
        "mod",
        "joe",
    ]


async def test_an_unreachable_rate_limit_store_is_503_not_500(pg: Databases, api_db: str) -> None:
    settings = pg.settings(api_db, **FAST_HASHING, redis_url="redis://127.0.0.1:1/0")
    async with AsyncTestClient(create_app(settings)) as client:
        response = await client.post("/api/v1/login", json={"username": "x", "password": "y"})
    assert response.status_code == 503
    assert response.json()["detail"] == "The service cannot check its rate limit; retry shortly"
    assert int(response.headers["retry-after"]) > 0


def test_create_admin_is_idempotent(pg: Databases, api_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    settings = pg.settings(api_db, **FAST_HASHING, admin_password="admin password 1")
    assert main(["seed"], settings=settings) == 0
    capsys.readouterr()
    assert main(["create-admin", "boss", "Boss@Example.com"], settings=settings) == 0
    first = capsys.readouterr()
    assert first.out.strip() == "Created admin 'boss'."
    assert main(["create-admin", "boss", "boss@example.com"], settings=settings) == 0
    second = capsys.readouterr()
    assert second.out.strip() == "User 'boss' is an admin already; nothing changed."
    rows = pg.query(
        api_db,
        "SELECT r.name FROM users u JOIN user_roles ur ON ur.user_id = u.id JOIN roles r ON r.id = ur.role_id "
        "WHERE u.username = 'boss' ORDER BY r.name",
    )
    assert [r[0] for r in rows] == ["admin", "user"]
    assert "admin password 1" not in first.out + first.err + second.out + second.err


def test_create_admin_reactivates_a_deactivated_admin(
    pg: Databases, api_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = pg.settings(api_db, **FAST_HASHING, admin_password="admin password 1")
    assert main(["seed"], settings=settings) == 0
    assert main(["create-admin", "boss", "boss@example.com"], settings=settings) == 0
    pg.query(api_db, "UPDATE users SET is_active = false WHERE username = 'boss'")
    capsys.readouterr()
    assert main(["create-admin", "boss", "boss@example.com"], settings=settings) == 0
    assert capsys.readouterr().out.strip() == "User 'boss' existed; reactivated it (password unchanged)."
    assert pg.query(api_db, "SELECT is_active FROM users WHERE username = 'boss'")[0][0] is True


def test_create_admin_without_a_password_source_is_refused(
    pg: Databases, api_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # No ADMIN_PASSWORD and no terminal to ask on (pytest's stdin is none).
    assert main(["create-admin", "boss", "boss@example.com"], settings=pg.settings(api_db)) == 1
    assert "set ADMIN_PASSWORD" in capsys.readouterr().err
    assert pg.query(api_db, "SELECT 1 FROM users") == []


def test_create_admin_checks_the_account_like_sign_up(
    pg: Databases, api_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = pg.settings(api_db, admin_password="short")
    assert main(["create-admin", "boss", "not-an-email"], settings=settings) == 1
    assert "invalid admin account" in capsys.readouterr().err


async def test_login_and_register_are_rate_limited_per_address(pg: Databases, api_db: str) -> None:
    async with AsyncTestClient(create_app(pg.settings(api_db, **FAST_HASHING, rate_limit_per_minute=3))) as client:
        codes = [
            (await client.post("/api/v1/login", json={"username": "x", "password": "y"})).status_code for _ in range(4)
        ]
        limited = await client.post(
            "/api/v1/register", json={"username": "abc", "email": "a@b.io", "password": "p" * 8}
        )
        health = await client.get("/health")
    assert codes == [401, 401, 401, 429]
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) > 0
    assert health.status_code == 200  # only sign-up and login are limited


async def test_two_instances_share_the_limit_through_redis(pg: Databases, api_db: str, redis_url: str) -> None:
    # A Redis database of this test's own, emptied first: counts from a run less than a minute ago would carry over.
    redis_url = redis_url.rsplit("/", 1)[0] + "/8"
    Redis.from_url(redis_url).flushdb()
    settings = pg.settings(api_db, **FAST_HASHING, rate_limit_per_minute=4, redis_url=redis_url)
    attempt = {"username": "x", "password": "y"}
    async with AsyncTestClient(create_app(settings)) as first, AsyncTestClient(create_app(settings)) as second:
        codes = [
            (await c.post("/api/v1/login", json=attempt)).status_code for c in (first, second, first, second, first)
        ]
    assert codes == [401, 401, 401, 401, 429]


def test_the_example_secret_is_refused_outside_development() -> None:
    with pytest.raises(ValidationError, match="JWT_SECRET is the example value"):
        Settings.model_validate({"environment": "production"})
    production = {"environment": "production", "jwt_secret": "s" * 40, "mail_backend": "smtp"}
    assert Settings.model_validate(production).environment == "production"


def test_mails_with_tokens_are_not_logged_outside_development() -> None:
    with pytest.raises(ValidationError, match="MAIL_BACKEND is console"):
        Settings.model_validate({"environment": "production", "jwt_secret": "s" * 40})


def test_the_example_secret_is_refused_beyond_loopback_unless_development_is_declared() -> None:
    with pytest.raises(ValidationError, match=r"API_HOST 0\.0\.0\.0 is reachable from other machines"):
        Settings.model_validate({"api_host": "0.0.0.0"})  # noqa: S104
    declared = Settings.model_validate({"api_host": "0.0.0.0", "environment": "development"})  # noqa: S104
    assert declared.uses_example_secret
    assert not Settings.model_validate({"api_host": "0.0.0.0", "jwt_secret": "s" * 40}).uses_example_secret  # noqa: S104


@pytest.mark.slow
def test_serve_refuses_to_start_with_the_example_secret(pg: Databases) -> None:
    result = run_app(["serve"], {**pg.env("x"), "ENVIRONMENT": "production"})
    assert result.returncode == 2
    assert "JWT_SECRET is the example value" in result.stderr


async def test_a_users_location_is_readable_by_itself_and_staff(client: Client, people: dict[str, Any]) -> None:
    joe_id, auth = people["ids"]["joe"], people["auth"]
    location = f"/api/v1/users/{joe_id}"
    assert (await client.get(location, headers=auth["joe"])).json()["username"] == "joe"
    assert (await client.get(location, headers=auth["mod"])).status_code == 200
    assert (await client.get(f"/api/v1/users/{people['ids']['root']}", headers=auth["joe"])).status_code == 403
    assert (await client.get("/api/v1/users/9999", headers=auth["root"])).status_code == 404
    assert (await client.get(location)).status_code == 401


async def test_another_instance_honours_a_deactivation_and_a_role_change_at_the_next_request(
    pg: Databases, api_db: str
) -> None:
    settings = pg.settings(api_db, **FAST_HASHING)
    async with AsyncTestClient(create_app(settings)) as one, AsyncTestClient(create_app(settings)) as other:
        root, joe = await sign_up(one, "root"), await sign_up(one, "joe")
        await grant_directly(pg, api_db, root, "admin")
        admin, user = await signed_in(one, "root"), await signed_in(one, "joe")
        assert (await other.get("/api/v1/me", headers=user)).json()["roles"] == ["user"]
        assert (await one.put(f"/api/v1/users/{joe}/roles/moderator", headers=admin)).status_code == 200
        assert (await other.get("/api/v1/me", headers=user)).json()["roles"] == ["moderator", "user"]
        assert (await other.get("/api/v1/users", headers=user)).status_code == 200  # a moderator may list
        assert (await one.patch(f"/api/v1/users/{joe}", json={"is_active": False}, headers=admin)).status_code == 200
        assert (await other.get("/api/v1/me", headers=user)).status_code == 401
