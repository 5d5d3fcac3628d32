"""POST /api/v1/register: the contract a client relies on."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.http.app import create_app
from tests.support.databases import FAST_HASHING, Databases
from tests.support.live_server import live_server

Client = AsyncTestClient[Litestar]
GUIDE_EXAMPLE = {"username": "test", "email": "test@example.com", "password": "secret123", "full_name": "Test User"}


async def users(pg: Databases, db: str) -> list[Any]:
    return await pg.fetch(db, "SELECT username, email, hashed_password FROM users ORDER BY id")


async def test_register_creates_a_user_with_the_user_role(client: Client, pg: Databases, api_db: str) -> None:
    response = await client.post("/api/v1/register", json={**GUIDE_EXAMPLE, "email": "Test@Example.COM"})
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "username", "email", "full_name", "roles", "created_at"}
    assert (body["username"], body["email"], body["full_name"], body["roles"]) == (
        "test",
        "test@example.com",
        "Test User",
        ["user"],
    )
    assert datetime.fromisoformat(body["created_at"]).tzinfo is not None
    assert response.headers["location"] == f"/api/v1/users/{body['id']}"
    (row,) = await users(pg, api_db)
    assert row["hashed_password"].startswith("$argon2id$")
    granted = await pg.fetch(
        api_db, "SELECT r.name FROM user_roles ur JOIN roles r ON r.id = ur.role_id WHERE ur.user_id = $1", body["id"]
    )
    assert [g["name"] for g in granted] == ["user"]


async def test_password_and_hash_never_leave_the_service(
    client: Client, pg: Databases, api_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    response = await client.post("/api/v1/register", json=GUIDE_EXAMPLE)
    duplicate = await client.post("/api/v1/register", json=GUIDE_EXAMPLE)
    (row,) = await users(pg, api_db)
    for text in (response.text, duplicate.text, caplog.text):
        assert "secret123" not in text
        assert row["hashed_password"] not in text
        assert "$argon2" not in text


@pytest.mark.parametrize(
    ("second", "field"),
    [
        ({"username": "TEST", "email": "other@example.com"}, "username"),
        ({"username": "other", "email": "TEST@example.com"}, "email"),
    ],
    ids=["username", "email"],
)
async def test_taken_name_or_email_ignoring_case_is_409(
    client: Client, pg: Databases, api_db: str, second: dict[str, str], field: str
) -> None:
    assert (await client.post("/api/v1/register", json=GUIDE_EXAMPLE)).status_code == 201
    response = await client.post("/api/v1/register", json={**GUIDE_EXAMPLE, **second})
    assert response.status_code == 409
    assert response.json() == {
        "type": "about:blank",
        "title": "Conflict",
        "status": 409,
        "detail": f"This {field} is already registered",
        "field": field,
    }
    assert len(await users(pg, api_db)) == 1


BAD_BODIES = {
    "username too short": ({**GUIDE_EXAMPLE, "username": "ab"}, "username"),
    "username too long": ({**GUIDE_EXAMPLE, "username": "a" * 51}, "username"),
    "username with a space": ({**GUIDE_EXAMPLE, "username": "bad name"}, "username"),
    "username with a trailing newline": ({**GUIDE_EXAMPLE, "username": "alice\n"}, "username"),
    "email without @": ({**GUIDE_EXAMPLE, "email": "not-an-email"}, "email"),
    "email without domain": ({**GUIDE_EXAMPLE, "email": "a@"}, "email"),
    "password too short": ({**GUIDE_EXAMPLE, "password": "short"}, "password"),
    "password too long": ({**GUIDE_EXAMPLE, "password": "p" * 129}, "password"),
    "full name too long": ({**GUIDE_EXAMPLE, "full_name": "n" * 101}, "full_name"),
    "a role asked for": ({**GUIDE_EXAMPLE, "roles": ["admin"]}, "roles"),
    "is_active asked for": ({**GUIDE_EXAMPLE, "is_active": True}, "is_active"),
    "wrong type": ({**GUIDE_EXAMPLE, "username": 5}, "username"),
    "missing password": ({k: v for k, v in GUIDE_EXAMPLE.items() if k != "password"}, "password"),
}


@pytest.mark.parametrize(("body", "field"), BAD_BODIES.values(), ids=BAD_BODIES.keys())
async def test_bad_input_is_400_naming_the_field(
    client: Client, pg: Databases, api_db: str, body: dict[str, Any], field: str
) -> None:
    response = await client.post("/api/v1/register", json=body)
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error["key"] == field or f"unknown field `{field}`" in error["message"]
    assert await users(pg, api_db) == []


@pytest.mark.parametrize(
    "raw", [b'{"username": "abc", "em', b"[]", b"", b"null"], ids=["truncated", "array", "empty", "null"]
)
async def test_malformed_json_is_400(client: Client, pg: Databases, api_db: str, raw: bytes) -> None:
    response = await client.post("/api/v1/register", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert set(response.json()) >= {"status", "title", "detail"}
    assert await users(pg, api_db) == []


async def test_twenty_racing_sign_ups_for_one_name_give_one_201(pg: Databases, api_db: str) -> None:
    bodies = [
        {**GUIDE_EXAMPLE, "username": "Racer" if i % 2 else "racer", "email": f"r{i}@example.com"} for i in range(20)
    ]
    async with live_server(create_app(pg.settings(api_db, **FAST_HASHING))) as client:
        responses = await asyncio.gather(*(client.post("/api/v1/register", json=body) for body in bodies))
    codes = sorted(r.status_code for r in responses)
    assert codes == [201] + [409] * 19
    assert len(await users(pg, api_db)) == 1


async def test_a_full_hashing_queue_answers_503_with_retry_after(pg: Databases, api_db: str) -> None:
    slow_hashing = {**FAST_HASHING, "argon2_time_cost": 200}  # each hash outlasts the burst's arrival
    settings = pg.settings(api_db, **slow_hashing, hash_workers=1, hash_queue_seconds=1e-6)
    async with live_server(create_app(settings)) as client:
        bodies = [{**GUIDE_EXAMPLE, "username": f"user{i}", "email": f"u{i}@example.com"} for i in range(6)]
        responses = await asyncio.gather(*(client.post("/api/v1/register", json=b) for b in bodies))
    refused = [r for r in responses if r.status_code == 503]
    assert {r.status_code for r in responses} == {201, 503}
    assert all(int(r.headers["retry-after"]) >= 1 for r in refused)
    assert len(await users(pg, api_db)) == len(responses) - len(refused)


async def test_an_exhausted_pool_is_503_not_409(pg: Databases, api_db: str) -> None:
    settings = pg.settings(api_db, **FAST_HASHING, db_pool_size=1, db_pool_timeout=0.2)
    app = create_app(settings)
    async with AsyncTestClient(app) as client, app.state.engine.connect():
        response = await client.post("/api/v1/register", json=GUIDE_EXAMPLE)
    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert await users(pg, api_db) == []


async def test_openapi_documents_the_contract(client: Client) -> None:
    document = (await client.get("/schema/openapi.json")).json()
    operation = document["paths"]["/api/v1/register"]["post"]
    assert set(operation["responses"]) >= {"201", "400", "409", "503"}
    assert operation["requestBody"]["content"]["application/json"]["schema"]["examples"][0]["username"] == "test"
    schemas = document["components"]["schemas"]
    assert schemas["UserCreate"]["additionalProperties"] is False
    assert schemas["UserRead"]["properties"]["roles"]["examples"] == [["user"]]
    assert operation["responses"]["409"]["content"]["application/problem+json"]["examples"]
    assert "hashed_password" not in str(document)


async def test_no_connection_is_held_while_the_password_hashes(pg: Databases, api_db: str) -> None:
    slow_hashing = {**FAST_HASHING, "argon2_time_cost": 400}
    app = create_app(pg.settings(api_db, **slow_hashing, hash_workers=1))
    async with live_server(app) as client:
        signing_up = asyncio.create_task(client.post("/api/v1/register", json=GUIDE_EXAMPLE))
        async with asyncio.timeout(10):
            while app.state.hashing.pending == 0:  # noqa: ASYNC110  (polling with a deadline)
                await asyncio.sleep(0.001)
        assert app.state.engine.pool.checkedout() == 0
        assert (await signing_up).status_code == 201


async def test_a_failing_insert_logs_no_password_or_hash(
    pg: Databases, api_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A constraint other than the unique names: the error is logged as a bug, and must not carry the row's values.
    await pg.fetch(api_db, "ALTER TABLE users ADD CONSTRAINT ck_users_no_bob CHECK (username <> 'bob')")
    caplog.set_level(logging.DEBUG)
    async with AsyncTestClient(create_app(pg.settings(api_db, **FAST_HASHING))) as client:
        response = await client.post("/api/v1/register", json={**GUIDE_EXAMPLE, "username": "bob"})
    assert response.status_code == 500
    assert (response.json()["status"], response.json()["detail"]) == (500, "Internal server error")
    assert "ck_users_no_bob" in caplog.text  # the bug is there to see
    assert "secret123" not in caplog.text
    assert "$argon2" not in caplog.text
