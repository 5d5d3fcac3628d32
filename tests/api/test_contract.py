"""Schemathesis, a real outside client, fuzzes the live service from its own OpenAPI document."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import pytest

from app.cli import schemathesis
from app.http.app import create_app
from tests.support.databases import FAST_HASHING, Databases
from tests.support.live_server import live_server

pytestmark = pytest.mark.slow  # Schemathesis against a live server

# A fixed seed makes a failure reproducible with the command the test prints; cases per phase are set in the
# configuration, to keep within the suite's time budget. CONTRACT_PHASES=all adds the coverage phase.
SEED = 1
PHASES = schemathesis.ALL_PHASES if os.environ.get("CONTRACT_PHASES") == "all" else schemathesis.QUICK_PHASES
# The document's own links, from a sign-up to its login and from the login to the user it names.
LINKS = {
    "POST /api/v1/register -> [201] LogIn -> POST /api/v1/login",
    "POST /api/v1/login -> [200] CurrentUser -> GET /api/v1/me",
}
_TRANSITION = re.compile(r'"transition":\s*\{"id":\s*"([^"]*)"')


async def test_schemathesis_finds_no_contract_failure(pg: Databases, api_db: str, tmp_path: Path) -> None:
    # The admin Schemathesis logs in as; fuzzed logins must not lock it out.
    admin = dict(zip(("username", "email", "password"), schemathesis.FUZZ_ADMIN, strict=True))
    settings = pg.settings(api_db, **FAST_HASHING, login_lockout_attempts=10**6)
    async with live_server(create_app(settings)) as client:
        assert (await client.post("/api/v1/register", json=admin)).status_code == 201
        await pg.fetch(api_db, "INSERT INTO user_roles SELECT u.id, r.id FROM users u, roles r WHERE r.name = 'admin'")
        report, events = tmp_path / "report.json", tmp_path / "events.ndjson"
        run = schemathesis.command(
            f"{str(client.base_url).rstrip('/')}/schema/openapi.json", report, seed=SEED, phases=PHASES
        )
        # Not subprocess.run: the server under test runs on this event loop and must keep answering.
        process = await asyncio.create_subprocess_exec(
            *run,
            "--report=json,ndjson",
            f"--report-ndjson-path={events}",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=schemathesis.environment(),
            cwd=tmp_path,  # where it keeps its cache of crashes
        )
        output = (await process.communicate())[0].decode()
    assert process.returncode == 0, output
    result = schemathesis.Report.read(report)
    print(f"schemathesis: {result}")
    assert result.operations == (20, 20)
    assert result.phases == dict.fromkeys(PHASES, "success")
    assert (result.failures, result.errors, result.warnings) == ([], [], {})
    assert set(_TRANSITION.findall(events.read_text())) >= LINKS, "the stateful phase did not follow the links"
