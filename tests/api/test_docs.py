"""The docs pages render in a real browser with no other host reachable: every asset comes from the service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from app.http.app import create_app
from tests.support.databases import FAST_HASHING, Databases
from tests.support.live_server import live_server
from tests.support.tools import debian_tool

pytestmark = pytest.mark.slow  # a real browser

OPERATIONS = ["Register a user", "Log in", "The current user", "List users", "Grant a role"]


@pytest.fixture
async def base_url(pg: Databases, api_db: str) -> AsyncIterator[str]:
    async with live_server(create_app(pg.settings(api_db, **FAST_HASHING))) as client:
        yield str(client.base_url).rstrip("/")


async def browse(url: str, tmp_path: Path, *what: str) -> str:
    """Run headless Chromium on `url` with every host but this machine unreachable; its stdout."""
    command = [
        debian_tool("chromium"),
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        # A CDN or a font host would be unreachable, as on a machine without internet.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--virtual-time-budget=15000",
        "--window-size=1280,900",
        *what,
        url,
    ]
    # Not subprocess.run: the server under test runs on this event loop and must keep answering.
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout=90)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0
    return out.decode(errors="replace")


@pytest.mark.parametrize("page", ["/schema", "/schema/swagger"], ids=["redoc", "swagger-ui"])
async def test_the_docs_render_their_operations_offline(base_url: str, page: str, tmp_path: Path) -> None:
    dom = await browse(base_url + page, tmp_path, "--dump-dom")
    missing = [operation for operation in OPERATIONS if operation not in dom]
    assert missing == [], f"{page} rendered without {missing}"


async def test_the_docs_page_is_not_blank(base_url: str, tmp_path: Path) -> None:
    shot = tmp_path / "docs.png"
    await browse(base_url + "/schema", tmp_path, f"--screenshot={shot}")
    with Image.open(shot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    # A blank or error page has a handful of colours; rendered docs (text, menus, badges) have hundreds.
    assert colours is None or len(colours) > 50, len(colours or [])


async def test_the_bearer_token_is_asked_for_where_the_service_asks_for_it(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client:
        document = (await client.get("/schema/openapi.json")).json()
    assert "security" not in document  # not on every operation
    secured = {
        f"{method.upper()} {path}"
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if operation.get("security")
    }
    assert secured == {
        "GET /api/v1/me",
        "DELETE /api/v1/me",
        "GET /api/v1/me/sessions",
        "POST /api/v1/me/password",
        "POST /api/v1/logout",
        "GET /api/v1/users",
        "GET /api/v1/users/{user_id}",
        "PATCH /api/v1/users/{user_id}",
        "PUT /api/v1/users/{user_id}/roles/{role}",
        "DELETE /api/v1/users/{user_id}/roles/{role}",
    }


async def test_every_operation_documents_the_errors_it_can_answer(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client:
        document = (await client.get("/schema/openapi.json")).json()
    documented = {
        f"{method.upper()} {path}": set(operation["responses"])
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    }
    guarded, staff = {"401", "503"}, {"400", "401", "403", "503"}
    expected = {
        "POST /api/v1/register": {"201", "400", "409", "413", "429", "503"},
        "POST /api/v1/login": {"200", "400", "401", "403", "413", "429", "503"},
        "POST /api/v1/refresh": {"200", "400", "401", "413", "429", "503"},
        "POST /api/v1/logout": {"204", "400", "413", *guarded},
        "GET /api/v1/me": {"200", *guarded},
        "DELETE /api/v1/me": {"204", "400", "403", "409", "413", "429", *guarded},
        "GET /api/v1/me/sessions": {"200", *guarded},
        "POST /api/v1/me/password": {"204", "400", "403", "409", "413", "429", *guarded},
        "POST /api/v1/password-reset": {"202", "400", "413", "429", "503"},
        "POST /api/v1/password-reset/confirm": {"204", "400", "413", "429", "503"},
        "POST /api/v1/verify-email": {"204", "400", "413", "429", "503"},
        "POST /api/v1/verify-email/resend": {"202", "400", "413", "429", "503"},
        "GET /api/v1/users": {"200", *staff},
        "GET /api/v1/users/{user_id}": {"200", "404", *staff},
        "PUT /api/v1/users/{user_id}/roles/{role}": {"200", "404", *staff},
        "DELETE /api/v1/users/{user_id}/roles/{role}": {"200", "404", "409", *staff},
        "PATCH /api/v1/users/{user_id}": {"200", "404", "409", "413", *staff},
        "GET /health": {"200", "503"},
    }
    assert {operation: documented[operation] for operation in expected} == expected
    error = document["components"]["schemas"]["Problem"]
    assert set(error["required"]) == {"status", "title", "detail"}
    # Clients that honour Retry-After find it documented wherever it is sent.
    for operation, statuses in expected.items():
        method, path = operation.split(" ")
        responses = document["paths"][path][method.lower()]["responses"]
        for status in statuses & {"429", "503"}:
            assert "Retry-After" in responses[status]["headers"], (operation, status)
        # Errors are problem details; the health checks answer 503 with their report, as 200 does.
        for status in {s for s in statuses if s >= "4"} if not path.startswith("/health") else ():
            assert list(responses[status]["content"]) == ["application/problem+json"], (operation, status)


async def test_request_bodies_say_what_the_server_refuses(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client:
        document = (await client.get("/schema/openapi.json")).json()
    schemas = document["components"]["schemas"]
    # msgspec refuses unknown fields; the document says so, so generated clients and fuzzers send none.
    assert {name: schemas[name]["additionalProperties"] for name in ("UserCreate", "LoginRequest", "UserUpdate")} == {
        "UserCreate": False,
        "LoginRequest": False,
        "UserUpdate": False,
    }
    username = schemas["UserCreate"]["properties"]["username"]
    assert (username["minLength"], username["maxLength"]) == (3, 50)
    assert schemas["UserCreate"]["properties"]["password"]["minLength"] == 8
    created = document["paths"]["/api/v1/register"]["post"]["responses"]["201"]
    assert "Location" in created["headers"]
