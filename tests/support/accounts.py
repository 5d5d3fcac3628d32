"""Accounts through the API as a client makes them: sign up, log in, refresh, and a role granted behind its back."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.databases import Databases

Client = httpx.AsyncClient  # an in-process test client, or a client of a live server
PASSWORD = "secret123"


async def sign_up(client: Client, name: str) -> int:
    """A new account `name` (email `name@example.com`, password PASSWORD); its id."""
    body = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
    response = await client.post("/api/v1/register", json=body)
    assert response.status_code == 201, response.text
    user_id: int = response.json()["id"]
    return user_id


async def log_in(client: Client, name: str, password: str = PASSWORD, agent: str = "pytest") -> dict[str, Any]:
    """Log in as `name` from a client calling itself `agent`; the tokens the service answers."""
    body = {"username": name, "password": password}
    response = await client.post("/api/v1/login", json=body, headers={"User-Agent": agent})
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


def bearer(tokens: dict[str, Any]) -> dict[str, str]:
    """The Authorization header of a login's access token."""
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def refresh(client: Client, refresh_token: str) -> Any:
    return await client.post("/api/v1/refresh", json={"refresh_token": refresh_token})


async def grant_directly(pg: Databases, db: str, user_id: int, role: str) -> None:
    """Give the user a role in the database itself, as an operator would, past the API's checks."""
    await pg.fetch(db, "INSERT INTO user_roles SELECT $1, id FROM roles WHERE name = $2", user_id, role)
