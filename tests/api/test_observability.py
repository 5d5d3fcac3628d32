"""What operators see: /metrics, request ids, JSON request logs, and `serve --workers N` adding its workers up."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import httpx
import psutil
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from app.cli import main
from app.cli.workers import hashers_per_worker
from app.http.app import create_app
from app.kit.logs import AccessLog, log_handler
from app.settings import PROJECT_ROOT
from tests.support.databases import FAST_HASHING, Databases
from tests.support.live_server import free_port
from tests.support.polling import poll

SIGN_UP = {"username": "rider", "email": "rider@example.com", "password": "secret-password-1"}
MADE_ID = re.compile(r"[0-9a-f]{32}")


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus exposition, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


@pytest.fixture
def logged(
    client: AsyncTestClient[Litestar], pg: Databases, api_db: str, capsys: pytest.CaptureFixture[str]
) -> Iterator[Callable[[], str]]:
    """What the service logs during the test as `serve` writes it: JSON lines, the request lines on stderr."""
    stream = io.StringIO()
    handler = log_handler(pg.settings(api_db), stream)
    logger = logging.getLogger("app")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lambda: stream.getvalue() + capsys.readouterr().err
    logger.removeHandler(handler)
    logger.setLevel(level)


async def test_metrics_count_requests_by_route_template_and_status_sign_ups_and_failed_logins(
    client: AsyncTestClient[Litestar],
) -> None:
    for _ in range(2):
        assert (await client.get("/health/live")).status_code == 200
    assert (await client.get("/api/v1/users/12345")).status_code == 401
    assert (await client.get("/no/such/page")).status_code == 404
    assert (await client.post("/api/v1/register", json=SIGN_UP)).status_code == 201
    assert (await client.post("/api/v1/register", json=SIGN_UP)).status_code == 409
    wrong = {"username": SIGN_UP["username"], "password": "not-the-password"}
    assert (await client.post("/api/v1/login", json=wrong)).status_code == 401
    assert (await client.post("/api/v1/login", json={**wrong, "username": "nobody"})).status_code == 401
    right = {"username": SIGN_UP["username"], "password": SIGN_UP["password"]}
    assert (await client.post("/api/v1/login", json=right)).status_code == 200

    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    found = samples(response.text)
    assert sample(found, "http_requests_total", method="GET", route="/health/live", status="200") == 2
    assert sample(found, "http_requests_total", method="GET", route="/api/v1/users/{user_id}", status="401") == 1
    assert sample(found, "http_requests_total", method="POST", route="/api/v1/login", status="401") == 2
    # Unknown paths share one label: a scanner cannot grow the series without bound.
    assert sample(found, "http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert not [key for key in found if "12345" in str(key) or "/no/such" in str(key)]
    assert sample(found, "http_request_duration_seconds_count", method="GET", route="/health/live") == 2
    assert sample(found, "http_request_duration_seconds_bucket", method="GET", route="/health/live", le="+Inf") == 2
    assert sample(found, "bikerental_sign_ups_total") == 1
    assert sample(found, "bikerental_failed_logins_total") == 2
    assert sample(found, "bikerental_password_hash_queue_depth") == 0
    assert sample(found, "bikerental_db_pool_connections_in_use", pool="sessions") == 0
    assert sample(found, "bikerental_db_pool_connections_in_use", pool="lookup") == 0
    # Public like the health checks, and no part of the API's document.
    assert "/metrics" not in (await client.get("/schema/openapi.json")).json()["paths"]


async def test_request_ids_and_json_log_lines_with_no_secret_in_them(
    client: AsyncTestClient[Litestar], logged: Callable[[], str], pg: Databases, api_db: str
) -> None:
    kept = await client.get("/no/such/page", headers={"X-Request-ID": "lb-7f3a.01_X"})
    assert (kept.status_code, kept.headers["x-request-id"]) == (404, "lb-7f3a.01_X")
    for malformed in [b"has space", b"x" * 129, b"a/b", "\u00e9t\u00e9".encode()]:
        replaced = await client.get("/health/live", headers={b"X-Request-ID": malformed})
        assert MADE_ID.fullmatch(replaced.headers["x-request-id"]), malformed
    made = [(await client.get("/health/live")).headers["x-request-id"] for _ in range(2)]
    assert all(MADE_ID.fullmatch(made_id) for made_id in made)
    assert made[0] != made[1]
    bad_json = await client.post(
        "/api/v1/register", content=b"{not json", headers={"Content-Type": "application/json", "X-Request-ID": "r-400"}
    )
    assert (bad_json.status_code, bad_json.headers["x-request-id"]) == (400, "r-400")

    assert (await client.post("/api/v1/register", json=SIGN_UP)).status_code == 201
    login = {"username": SIGN_UP["username"], "password": SIGN_UP["password"]}
    tokens = (await client.post("/api/v1/login", json=login)).json()
    token = tokens["access_token"]
    me = await client.get("/api/v1/me?verbose=1", headers={"Authorization": f"Bearer {token}", "X-Request-ID": "me-1"})
    assert me.status_code == 200
    await pg.fetch(api_db, "DELETE FROM roles WHERE name = 'user'")  # sign-ups now fail inside the service
    broken = await client.post("/api/v1/register", json={**SIGN_UP, "username": "other", "email": "o@example.com"})
    assert broken.status_code == 500

    written = logged()
    lines = [json.loads(line) for line in written.splitlines()]
    [line] = [line for line in lines if line.get("request_id") == "me-1"]
    assert line["logger"] == "app.access"
    assert {key: line[key] for key in ("method", "route", "path", "status", "client")} == {
        "method": "GET",
        "route": "/api/v1/me",
        "path": "/api/v1/me",  # the path alone: a query string could carry what no log should
        "status": 200,
        "client": "testclient",
    }
    assert isinstance(line["duration_ms"], float)
    # The 500 handler's line and the access line of that request carry its id, as its answer does.
    of_broken = [line for line in lines if line.get("request_id") == broken.headers["x-request-id"]]
    assert sorted((line["level"], line["logger"]) for line in of_broken) == [
        ("ERROR", "app.http"),
        ("INFO", "app.access"),
    ]
    for secret in (SIGN_UP["password"], token, token.split(".")[-1], tokens["refresh_token"], "$argon2"):
        assert secret not in written


async def test_no_metrics_on_the_api_port_when_disabled_or_moved(pg: Databases, api_db: str) -> None:
    disabled = pg.settings(api_db, metrics_enabled=False, **FAST_HASHING)
    async with AsyncTestClient(create_app(disabled)) as client:
        response = await client.get("/metrics", headers={"X-Request-ID": "m-1"})
        assert (response.status_code, response.headers["x-request-id"]) == (404, "m-1")
    # METRICS_PORT: `serve` answers scrapes there, not on the API's port.
    moved = create_app(pg.settings(api_db, metrics_port=9100))
    assert "/metrics" not in {route.path for route in moved.routes}
    with pytest.raises(ValidationError, match="METRICS_PORT and API_PORT are both 8000"):
        pg.settings(api_db, metrics_port=8000)


@pytest.mark.slow
async def test_serve_with_two_workers_adds_their_counts_up_and_stops_both_on_sigterm(
    pg: Databases, api_db: str
) -> None:
    port, requests = free_port(), 24
    env = {**pg.env(api_db), **{k.upper(): str(v) for k, v in FAST_HASHING.items()}}
    server = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--workers", "2"],
        env={**env, "API_PORT": str(port), "DRAIN_SECONDS": "0.5", "LOG_FORMAT": "text"},
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert server.stdout is not None
    stdout = server.stdout
    lines: list[str] = []  # what it says, line by line as it says it
    reader = threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")), daemon=True)
    reader.start()
    workers: list[int] = []
    try:
        async with asyncio.timeout(60):  # both workers serving, not only started
            while len(workers) < 2:
                said = "".join(lines)
                if said.count("Application startup complete") == 2:
                    workers = [int(pid) for pid in re.findall(r"Started server process \[(\d+)\]", said)]
                await asyncio.sleep(0.05)
        # A connection each, all at once: the workers share the listening socket and take them as they come.
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits) as client:
            answers = await asyncio.gather(*(client.get("/health/live") for _ in range(requests)))
            assert {answer.status_code for answer in answers} == {200}
            for _ in range(4):  # whichever worker answers the scrape counts every worker's requests
                found = samples((await client.get("/metrics")).text)
                live = sample(found, "http_requests_total", method="GET", route="/health/live", status="200")
                assert live == requests
            server.send_signal(signal.SIGTERM)
            draining = await poll(client, "/health/ready", 503)
            assert draining.json()["status"] == "draining"
        await asyncio.to_thread(server.wait, timeout=30)
    finally:
        if server.poll() is None:  # it failed: leave no worker behind either
            server.kill()
            server.wait()
            for pid in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        reader.join(timeout=10)
    output = "".join(lines)
    assert server.returncode == 0, output
    assert not [pid for pid in workers if psutil.pid_exists(pid)]
    assert "Traceback" not in output
    assert output.count("Finished server process") == 2


def test_workers_share_the_hashers_out_and_a_bad_number_is_refused(
    pg: Databases, capsys: pytest.CaptureFixture[str]
) -> None:
    cores = os.cpu_count() or 1
    assert hashers_per_worker(pg.settings("x"), 2) == max(1, cores // 2)
    assert hashers_per_worker(pg.settings("x", hash_workers=8), 2) == 4
    assert hashers_per_worker(pg.settings("x", hash_workers=2), 3) == 1
    with pytest.raises(SystemExit):
        main(["serve", "--workers", "0"], settings=pg.settings("x"))
    assert "'0' is not a number of workers: give 1 or more" in capsys.readouterr().err


def test_a_request_line_cannot_be_split_by_what_a_client_puts_in_the_path(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.access")
    path = '/a\n{"level": "ERROR"}"\u00e9'
    AccessLog("json").write("GET", "unmatched", path, 404, 0.0012, "10.0.0.1", "r-1")
    AccessLog("text").write("GET", "unmatched", path, 404, 0.0012, "10.0.0.1", "r-2")
    json_line, text_line = capsys.readouterr().err.splitlines()
    assert json.loads(json_line)["path"] == path
    assert text_line == 'INFO:     GET /a\\n{"level": "ERROR"}"\\xe9 404 1.2 ms [r-2]'
