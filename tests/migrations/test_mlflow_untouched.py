"""MLflow's database comes out of every API command and of serving sign-ups byte for byte as it went in.

And `just mlflow` runs MLflow's tracking server in that database, on the same PostgreSQL as the API.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from litestar.testing import TestClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from app.cli import main
from app.http.app import create_app
from app.mlflow.store import backend_store_uri, mlflow_address
from app.settings import PROJECT_ROOT, Settings
from tests.support.databases import FAST_HASHING, Databases
from tests.support.live_server import free_port
from tests.support.mlflow import mlflow_db_upgrade, snapshot

pytestmark = pytest.mark.slow  # MLflow's server and every command

SERVE_DEADLINE = 60.0
# `just mlflow` may first install the `mlflow` extra (from uv's cache: seconds) before MLflow starts.
MLFLOW_DEADLINE = 180.0


def fill_through_mlflow(tracking_uri: str, artifacts: Path) -> None:
    """Experiments, runs, params, metrics, tags and a registered model, written by MLflow's own client."""
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    for name in ("bikes-demand", "bikes-churn"):
        experiment = client.create_experiment(name, artifact_location=(artifacts / name).as_uri(), tags={"team": "ds"})
        for model in ("ridge", "gbm"):
            run = client.create_run(experiment, run_name=f"{name}-{model}", tags={"model": model})
            run_id = run.info.run_id
            client.log_param(run_id, "model", model)
            now = int(time.time() * 1000)
            metrics = [Metric("rmse", 20.0 / (step + 1), now + step, step) for step in range(5)]
            client.log_batch(run_id, metrics=metrics, params=[Param("alpha", "0.1")], tags=[RunTag("stage", "dev")])
            client.set_terminated(run_id)
        client.delete_run(run_id)
    client.create_registered_model("bikes-demand-model", tags={"owner": "ds"})


@pytest.fixture
def filled_mlflow_db(pg: Databases, mlflow_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    # No pooled connections left open on MLflow's database while the API commands run.
    monkeypatch.setenv("MLFLOW_SQLALCHEMYSTORE_POOLCLASS", "NullPool")
    fill_through_mlflow(pg.psycopg_url(mlflow_db), tmp_path / "artifacts")
    return mlflow_db


@dataclass(frozen=True)
class Layout:
    """Where MLflow's tables are, and the settings that put the API beside them."""

    mlflow_database: str
    mlflow_schema: str
    settings: dict[str, str]  # Settings fields


@pytest.fixture(params=["two databases", "one database, two schemas"])
def layout(request: pytest.FixtureRequest, pg: Databases, filled_mlflow_db: str, api_db_name: str) -> Iterator[Layout]:
    """The guide's layout (a database each), or one database with MLflow in schema `tracking` and the API in `api`."""
    if request.param == "two databases":
        yield Layout(filled_mlflow_db, "public", {"api_db_name": api_db_name, "postgres_db": filled_mlflow_db})
        return
    shared = pg.create(pg.new_name("shared"), template=filled_mlflow_db)
    pg.query(shared, "ALTER SCHEMA public RENAME TO tracking")
    pg.query(shared, "CREATE SCHEMA public")
    # MLflow pointed at its schema, as its users do: its own migrations find the store at head, its client writes.
    url = sa.make_url(pg.psycopg_url(shared)).update_query_dict({"options": "-csearch_path=tracking"})
    uri = url.render_as_string(hide_password=False)
    mlflow_db_upgrade(uri)
    MlflowClient(tracking_uri=uri).create_experiment("bikes-shared", artifact_location="file:///tmp/bikes-shared")
    yield Layout(shared, "tracking", {"api_db_name": shared, "postgres_db": shared, "api_db_schema": "api"})
    pg.drop(shared)


@pytest.fixture
def api_db_name(pg: Databases) -> Iterator[str]:
    """A name for an API database that the commands create themselves; dropped afterwards."""
    name = pg.new_name("api")
    yield name
    pg.drop(name)


@pytest.fixture
def missing_mlflow_db(pg: Databases) -> Iterator[str]:
    """A name for MLflow's database that `just mlflow` must create itself; dropped afterwards."""
    name = pg.new_name("mlflow_new")
    yield name
    pg.drop(name)


def wait_for(ready: Callable[[], bool], process: subprocess.Popen[bytes], log: Path, deadline: float) -> None:
    """Poll until `ready()`; fail at once with the log when the process exits, or at the deadline."""
    give_up = time.monotonic() + deadline
    while not ready():
        assert process.poll() is None, f"exited with {process.returncode}:\n{log.read_text()}"
        assert time.monotonic() < give_up, f"not ready after {deadline:.0f} s:\n{log.read_text()}"
        time.sleep(0.1)


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def stop(process: subprocess.Popen[bytes], signum: int = signal.SIGTERM) -> int:
    """Signal the process group the test started, as a supervisor (SIGTERM) or Ctrl-C (SIGINT) would; its exit code."""
    if process.poll() is None:
        os.killpg(process.pid, signum)
    return process.wait(timeout=30)


def serve_and_register(settings: Settings) -> None:
    """The service's startup (which migrates and seeds first) and sign-ups through its HTTP API."""
    with TestClient(create_app(settings)) as client:
        for name in ("alice", "bob"):
            body = {"username": name, "email": f"{name}@example.com", "password": "secret123", "full_name": name}
            assert client.post("/api/v1/register", json=body).status_code == 201
        duplicate = {"username": "ALICE", "email": "other@example.com", "password": "secret123"}
        assert client.post("/api/v1/register", json=duplicate).status_code == 409


def test_no_api_command_changes_mlflows_database(pg: Databases, layout: Layout, tmp_path: Path) -> None:
    api_schema = layout.settings.get("api_db_schema")
    before = snapshot(pg, layout.mlflow_database, api_schema)
    assert before.tables[f"{layout.mlflow_schema}.runs"][0] == 4
    assert before.tables[f"{layout.mlflow_schema}.metrics"][0] == 4 * 5
    api_database = layout.settings["api_db_name"]
    # MLflow's database is the configured one, beside the API's on the same server (or the same database).
    settings = pg.settings(api_database, **layout.settings, backup_dir=tmp_path / "backups", **FAST_HASHING)
    versions = tmp_path / "versions"
    versions.mkdir()
    # Every command a person runs on the API database; the service's startup below migrates and seeds again after
    # the reset.
    commands = [
        ["init"],
        ["migrate"],
        ["seed"],
        ["backup"],
        ["revision", "Autogenerate against the shared server", "--version-path", str(versions)],
        ["check"],
        ["downgrade", "base"],
        ["restore", "--yes"],
        ["reset", "--yes"],
    ]
    for args in commands:
        assert main(args, settings=settings) == 0, " ".join(args)
    assert len(list(versions.glob("*.py"))) == 1
    serve_and_register(settings)

    users = pg.query(api_database, f"SELECT username FROM {api_schema or 'public'}.users ORDER BY id")
    assert [row[0] for row in users] == ["alice", "bob"]
    after = snapshot(pg, layout.mlflow_database, api_schema)
    assert after.schema == before.schema
    assert after.tables == before.tables
    assert after.sequences == before.sequences


def test_the_snapshot_sees_a_one_value_change(pg: Databases, filled_mlflow_db: str) -> None:
    before = snapshot(pg, filled_mlflow_db)
    one_run = "(SELECT min(run_uuid) FROM params)"
    pg.query(filled_mlflow_db, f"UPDATE params SET value = '0.2' WHERE key = 'alpha' AND run_uuid = {one_run}")
    changed = snapshot(pg, filled_mlflow_db)
    assert changed.tables["public.params"] != before.tables["public.params"]
    assert {k: v for k, v in changed.tables.items() if k != "public.params"} == {
        k: v for k, v in before.tables.items() if k != "public.params"
    }
    pg.query(filled_mlflow_db, "CREATE INDEX ix_probe ON params (value)")
    assert snapshot(pg, filled_mlflow_db).schema != before.schema


def mlflow_server_pid(database: str) -> int:
    """The `mlflow server` process whose backend store is `database`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue  # exited while we looked
            if argv[1:4] == [b"-m", b"mlflow", b"server"] and any(database.encode() in arg for arg in argv):
                found.append(int(entry.name))
    (pid,) = found
    return pid


@pytest.mark.skipif(not (shutil.which("just") and shutil.which("uv")), reason="`just mlflow` needs just and uv on PATH")
def test_just_mlflow_serves_runs_into_mlflows_database(
    pg: Databases, missing_mlflow_db: str, api_db_name: str, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "mlflow.log"
    # MLflow's credentials are those of the test server (they matter only when TEST_DATABASE_URL names one).
    credentials = {"POSTGRES_USER": pg.address.user, "POSTGRES_PASSWORD": pg.address.password or ""}
    # MLflow's job runner (GenAI scorers) starts four more Python processes that this check does not need.
    env = {
        **pg.env(api_db_name),
        "POSTGRES_DB": missing_mlflow_db,
        **credentials,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["just", "mlflow", "--port", str(port)],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        ready = f"MLflow tracking server ready on http://127.0.0.1:{port}"
        wait_for(lambda: ready in log.read_text(), process, log, MLFLOW_DEADLINE)
        server_group = os.getpgid(mlflow_server_pid(missing_mlflow_db))
        client = MlflowClient(tracking_uri=f"http://127.0.0.1:{port}")
        experiment = client.create_experiment("bikes-demand")
        run = client.create_run(experiment, run_name="through-the-server")
        client.log_metric(run.info.run_id, "rmse", 12.5)
        client.set_terminated(run.info.run_id)
    finally:
        code = stop(process, signal.SIGINT)
    said = log.read_text()
    (reported,) = [line for line in said.splitlines() if line.startswith(f"MLflow database '{missing_mlflow_db}' on ")]
    assert reported.endswith(": created.")
    assert "Traceback" not in said
    # The app stops MLflow and exits 0; just reports any recipe that saw a Ctrl-C as 130.
    assert code in (0, 128 + signal.SIGINT), said
    assert "Stopping the MLflow tracking server..." in said
    rows = pg.query(
        missing_mlflow_db,
        "SELECT r.name, r.status, m.key, m.value FROM runs r JOIN metrics m USING (run_uuid) WHERE r.run_uuid = $1",
        run.info.run_id,
    )
    assert [tuple(row) for row in rows] == [("through-the-server", "FINISHED", "rmse", 12.5)]
    assert not pg.query("postgres", "SELECT 1 FROM pg_database WHERE datname = $1", api_db_name)
    # Stopping `just mlflow` stops MLflow's uvicorn, workers and job runner too: nothing is left on the port.
    with pytest.raises(ProcessLookupError):
        os.killpg(server_group, 0)
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_mlflow_reaches_a_configured_server_as_mlflows_user_with_no_password_in_its_uri() -> None:
    settings = Settings.model_validate(
        {
            "api_db_host": "db.example",
            "api_db_port": 5433,
            "api_db_user": "api",
            "api_db_password": "api-secret",
            "postgres_user": "tracker",
            "postgres_password": "p@ss:w/rd",
            "postgres_db": "tracking",
        }
    )
    address = mlflow_address(settings)
    assert (address.host, address.port, address.user, address.password) == ("db.example", 5433, "tracker", "p@ss:w/rd")
    # The password goes to MLflow as PGPASSWORD, never on a command line that `ps` shows.
    assert backend_store_uri(address, "tracking") == "postgresql+psycopg://tracker@db.example:5433/tracking"
