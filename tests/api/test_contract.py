"""Schemathesis, a real outside client, fuzzes the live service from its own OpenAPI document."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from app.http.app import create_app
from app.settings import PROJECT_ROOT
from tests.support.databases import FAST_HASHING, Databases
from tests.support.live_server import live_server

pytestmark = pytest.mark.slow  # Schemathesis against a live server

CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "positive_data_acceptance",
]
# Any warning (data the server mostly rejects, auth that never works, ...) fails the run, as a failure does.
CONFIG = PROJECT_ROOT / "app" / "cli" / "schemathesis.toml"
# Cases per phase are set in CONFIG, to keep within the suite's time budget. A fixed seed makes a failure
# reproducible with the command the test prints.
SEED = 1
# CONTRACT_PHASES=all adds the coverage phase (see CONFIG).
PHASES = (
    "examples,coverage,fuzzing,stateful" if os.environ.get("CONTRACT_PHASES") == "all" else "examples,fuzzing,stateful"
)
# The document's own links, from a sign-up to its login and from the login to the user it names.
LINKS = {
    "POST /api/v1/register -> [201] LogIn -> POST /api/v1/login",
    "POST /api/v1/login -> [200] CurrentUser -> GET /api/v1/me",
}
_TRANSITION = re.compile(r'"transition":\s*\{"id":\s*"([^"]*)"')


async def test_schemathesis_finds_no_contract_failure(pg: Databases, api_db: str, tmp_path: Path) -> None:
    # The admin Schemathesis logs in as (tests/api/schemathesis.toml); fuzzed logins must not lock it out.
    admin = {"username": "fuzz_admin", "email": "fuzz_admin@example.com", "password": "fuzz admin password"}
    settings = pg.settings(api_db, **FAST_HASHING, login_lockout_attempts=10**6)
    async with live_server(create_app(settings)) as client:
        assert (await client.post("/api/v1/register", json=admin)).status_code == 201
        await pg.fetch(api_db, "INSERT INTO user_roles SELECT u.id, r.id FROM users u, roles r WHERE r.name = 'admin'")
        report, events = tmp_path / "report.json", tmp_path / "events.ndjson"
        # Not subprocess.run: the server under test runs on this event loop and must keep answering.
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(CONFIG),
            "run",
            f"{str(client.base_url).rstrip('/')}/schema/openapi.json",
            f"--checks={','.join(CHECKS)}",
            f"--seed={SEED}",
            f"--phases={PHASES}",
            "--report=json,ndjson",
            f"--report-json-path={report}",
            f"--report-ndjson-path={events}",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,  # where it keeps its cache of crashes
        )
        output = (await process.communicate())[0].decode()
    assert process.returncode == 0, output
    summary: dict[str, Any] = json.loads(report.read_text())
    print(f"schemathesis: {summary['test_cases']['generated']} cases in {summary['running_time']:.1f} s")
    assert summary["operations"]["tested"] == summary["operations"]["total"] == 20
    ran = {name: phase["status"] for name, phase in summary["phases"].items() if phase["status"] != "skip"}
    assert ran == dict.fromkeys(PHASES.split(","), "success")
    assert (summary["failures"], summary["errors"]) == ([], [])
    assert {kind: found for kind, found in summary["warnings"].items() if found} == {}
    assert set(_TRANSITION.findall(events.read_text())) >= LINKS, "the stateful phase did not follow the links"
