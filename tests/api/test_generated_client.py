"""A client generated from the OpenAPI document by a real generator works: the document is fit for the tools."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.http.app import create_app
from tests.support.databases import FAST_HASHING, Databases
from tests.support.live_server import live_server

pytestmark = pytest.mark.slow  # a client generator


@pytest.fixture
async def served(pg: Databases, api_db: str) -> AsyncIterator[httpx.AsyncClient]:
    async with live_server(create_app(pg.settings(api_db, **FAST_HASHING))) as client:
        yield client


def generate(document: Path, into: Path) -> Any:
    """openapi-python-client's package for `document`, imported."""
    tools = Path(sys.executable).parent  # its post-generation hooks run ruff from here
    command = [str(tools / "openapi-python-client"), "generate", "--path", str(document), "--meta", "none"]
    command += ["--output-path", str(into / "bikerental_client")]
    env = {**os.environ, "PATH": os.pathsep.join([str(tools), os.environ["PATH"]])}
    result = subprocess.run(command, cwd=into, env=env, capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Warning" not in result.stdout + result.stderr, result.stdout + result.stderr
    sys.path.insert(0, str(into))
    try:
        return importlib.import_module("bikerental_client")
    finally:
        sys.path.remove(str(into))


async def test_a_generated_client_registers_logs_in_and_reads_me(served: httpx.AsyncClient, tmp_path: Path) -> None:
    document = tmp_path / "openapi.json"
    document.write_bytes((await served.get("/schema/openapi.json")).content)
    package = generate(document, tmp_path)
    try:
        api = importlib.import_module("bikerental_client.api.default")
        models = importlib.import_module("bikerental_client.models")
        register = importlib.import_module(f"{api.__name__}.register")
        login = importlib.import_module(f"{api.__name__}.login")
        me = importlib.import_module(f"{api.__name__}.me")
        base = str(served.base_url)

        client = package.Client(base_url=base)
        body = models.UserCreate(username="gen", email="gen@example.com", password="generated pw", full_name="Gen")
        created = await register.asyncio(client=client, body=body)
        assert isinstance(created, models.UserRead), created
        assert (created.username, created.roles) == ("gen", ["user"])

        token = await login.asyncio(client=client, body=models.LoginRequest(username="gen", password="generated pw"))
        assert isinstance(token, models.AccessToken), token
        signed_in = package.AuthenticatedClient(base_url=base, token=token.access_token)
        user = await me.asyncio(client=signed_in)
        assert isinstance(user, models.UserDetail), user
        assert (user.id, user.email, user.is_active) == (created.id, "gen@example.com", True)

        refused = await me.asyncio_detailed(client=package.AuthenticatedClient(base_url=base, token="not-a-token"))
        assert refused.status_code == 401
        assert isinstance(refused.parsed, models.Problem)
    finally:
        for name in [name for name in sys.modules if name.startswith("bikerental_client")]:
            del sys.modules[name]
