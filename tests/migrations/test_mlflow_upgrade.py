"""`just mlflow-upgrade`: MLflow's own schema upgrade, planned, rehearsed and applied on a store an older MLflow left,
and put back exactly as it was when a revision fails, a lock is held or the upgrade is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from mlflow.tracking import MlflowClient

from app.cli import main
from app.cli.mlflow import server_command
from app.cli.processes import answers_200, stop_group
from app.mlflow.checks import check_in_plain_words
from app.mlflow.revisions import mlflow_scripts
from app.settings import PROJECT_ROOT, Settings
from tests.support.databases import Databases, another_transaction
from tests.support.live_server import free_port
from tests.support.mlflow import OLD_REVISION, Snapshot, build_old_store, fill_store, mlflow_at, snapshot
from tests.support.templates import shared_template

pytestmark = pytest.mark.slow  # MLflow's migrations, its client and its server

METRICS = 2000
SCRIPTS = mlflow_scripts()
PENDING = [script.revision for script in SCRIPTS.pending(OLD_REVISION)]
HEAD = SCRIPTS.head


@pytest.fixture(scope="session")
def old_store_template(pg: Databases, shared_folder: Path | None) -> Iterator[str]:
    """A store made by MLflow's own revision scripts up to OLD_REVISION, filled through MLflow's client."""

    def build(name: str) -> None:
        url = pg.psycopg_url(name)
        build_old_store(url)
        fill_store(url, METRICS)

    yield from shared_template(pg, shared_folder, "mlflow_old_template", build)


@pytest.fixture
def old_store(pg: Databases, old_store_template: str) -> Iterator[str]:
    with pg.temporary("mlflow_old", template=old_store_template) as name:
        yield name


@pytest.fixture
def settings(pg: Databases, api_db: str, old_store: str, tmp_path: Path) -> Settings:
    """The API's settings, with MLflow's database the old store; backups in a folder of the test's own."""
    return pg.settings(api_db, postgres_db=old_store, backup_dir=tmp_path / "backups", migration_lock_timeout=1)


def revision_of(pg: Databases, database: str, schema: str = "public") -> list[str]:
    return [row[0] for row in pg.query(database, f"SELECT version_num FROM {schema}.alembic_version")]


def runs_and_metrics(client: MlflowClient) -> dict[str, tuple[str, dict[str, str], list[tuple[str, int, float]]]]:
    """Every run of every experiment: its status, params and every value of every metric."""
    found = {}
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id]):
            history = [
                (key, metric.step, metric.value)
                for key in sorted(run.data.metrics)
                for metric in client.get_metric_history(run.info.run_id, key)
            ]
            found[run.info.run_id] = (run.info.status, run.data.params, sorted(history))
    return found


def same_store(one: Snapshot, other: Snapshot) -> bool:
    """The same schema (CHECK constraints as a restore words them) and the same rows and sequences."""
    words = [[check_in_plain_words(line) for line in shot.schema.splitlines()] for shot in (one, other)]
    return words[0] == words[1] and (one.tables, one.sequences) == (other.tables, other.sequences)


def mlflow_upgrade(settings: Settings, *args: str) -> int:
    return main(["mlflow-upgrade", *args], settings=settings)


def test_plan_lists_the_pending_revisions_and_changes_nothing(
    pg: Databases, settings: Settings, old_store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(pg, old_store)
    assert mlflow_upgrade(settings) == 0
    said = capsys.readouterr().out
    assert f"at {OLD_REVISION}; MLflow 3.17.2's head is {HEAD}: {len(PENDING)} revision(s) pending" in said
    listed = [line.split()[0] for line in said.splitlines() if line.startswith("  ") and not line.startswith("    ")]
    assert listed == PENDING
    assert "ALTER TABLE experiment_tags ALTER COLUMN value TYPE TEXT;" in said
    assert "squawk: changing-column-type:" in said
    assert "needs the live store: offline rendering stops part-way" in said  # the revisions that read rows
    assert "table experiment_tags: 4 rows" in said
    assert "Nothing was changed." in said
    assert snapshot(pg, old_store) == before


def test_rehearse_times_each_revision_on_a_copy_and_leaves_the_store_as_it_was(
    pg: Databases, settings: Settings, old_store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(pg, old_store)
    assert mlflow_upgrade(settings, "rehearse") == 0
    said = capsys.readouterr().out
    timed = [line.split() for line in said.splitlines() if line.startswith("  ") and line.split()[0] in PENDING]
    assert [line[0] for line in timed] == PENDING
    assert all(line[2] == "s" for line in timed)
    assert "The copy reached head" in said
    assert "passed every check" in said
    assert snapshot(pg, old_store) == before
    assert revision_of(pg, old_store) == [OLD_REVISION]
    assert not pg.query("postgres", "SELECT 1 FROM pg_database WHERE datname LIKE '%__mlflow_rehearse_%'")


def test_apply_reaches_head_and_mlflows_server_returns_every_run_and_metric(
    pg: Databases, settings: Settings, old_store: str, api_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = pg.psycopg_url(old_store)
    store_before = snapshot(pg, old_store)
    with mlflow_at(OLD_REVISION):
        before = runs_and_metrics(MlflowClient(tracking_uri=url))
    assert sum(len(history) for _, _, history in before.values()) == METRICS
    api_before = snapshot(pg, api_db)
    # The API's commands still refuse MLflow's database, before and after MLflow's own upgrade.
    refused = "holds MLflow's tracking tables"
    assert main(["migrate"], settings=settings.model_copy(update={"api_db_name": old_store})) == 1
    assert refused in capsys.readouterr().err
    assert mlflow_upgrade(settings, "apply", "--yes") == 0
    said = capsys.readouterr().out
    assert f"MLflow's store is at head ({HEAD}): {len(PENDING)} revision(s)" in said
    assert revision_of(pg, old_store) == [HEAD]
    assert len(list(settings.backup_dir.glob(f"mlflow-{old_store}-public-*-{OLD_REVISION}.dump"))) == 1
    assert main(["migrate"], settings=settings.model_copy(update={"api_db_name": old_store})) == 1
    assert refused in capsys.readouterr().err
    assert snapshot(pg, api_db) == api_before

    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = server_command(url, "127.0.0.1", port, 1, Path(settings.backup_dir) / "artifacts")
    server = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while not answers_200(f"http://127.0.0.1:{port}/health"):
            assert server.poll() is None, server.stderr.read().decode()[-2000:] if server.stderr else ""
            assert time.monotonic() < deadline, "MLflow's server did not start on the upgraded store"
            time.sleep(0.2)
        assert runs_and_metrics(MlflowClient(tracking_uri=f"http://127.0.0.1:{port}")) == before
    finally:
        stop_group(server, 15)

    # The way back: the backup apply took, put back by `restore`.
    (backup,) = settings.backup_dir.glob(f"mlflow-{old_store}-public-*-{OLD_REVISION}.dump")
    capsys.readouterr()
    assert mlflow_upgrade(settings, "restore", str(backup), "--yes") == 0
    assert f"is as {backup} holds it" in capsys.readouterr().out
    assert same_store(snapshot(pg, old_store), store_before)
    assert len(list(settings.backup_dir.glob(f"mlflow-{old_store}-public-*-{HEAD}.dump"))) == 1  # as it was at head
    assert snapshot(pg, api_db) == api_before


def test_a_table_a_pending_revision_creates_stops_it_and_the_store_stays_as_it_was(
    pg: Databases, settings: Settings, old_store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # As in mlflow#19943: a table already there that a revision creates ("relation already exists").
    pg.query(old_store, "CREATE TABLE scheduler_leases (lease_key text PRIMARY KEY)")
    before = snapshot(pg, old_store)
    assert mlflow_upgrade(settings, "apply", "--yes") == 1
    said = capsys.readouterr().err
    assert f"error: revision {HEAD} (add job executor persistence model) failed: DuplicateTable" in said
    assert f"is exactly as it was, at {OLD_REVISION}; the backup taken first is" in said
    assert snapshot(pg, old_store) == before


def test_a_lock_held_on_a_table_the_upgrade_alters_gives_up_within_the_lock_timeout(
    pg: Databases, settings: Settings, old_store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(pg, old_store)
    with another_transaction(pg, old_store) as reader:
        # A long read of experiment_tags, which 17e22815139b rewrites (its value becomes TEXT).
        reader.exec_driver_sql("LOCK TABLE experiment_tags IN ACCESS SHARE MODE")
        started = time.monotonic()
        assert mlflow_upgrade(settings, "apply", "--yes", "--online") == 1
        took = time.monotonic() - started
    said = capsys.readouterr()
    assert "pid " not in said.err  # --online: the reader does not stop it from starting
    assert (
        "error: revision 17e22815139b (increase experiment tag value limit to 20000) failed: LockNotAvailable"
        in said.err
    )
    assert f"exactly as it was, at {OLD_REVISION}" in said.err
    failed = [line for line in said.out.splitlines() if "17e22815139b" in line and "FAILED" in line]
    assert len(failed) == 1
    assert 1.0 <= float(failed[0].split()[1]) < 2.0, failed
    assert took < 30
    assert snapshot(pg, old_store) == before


def test_apply_refuses_while_mlflows_server_is_connected(
    pg: Databases, settings: Settings, old_store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(pg, old_store)
    with another_transaction(pg, old_store) as connection:
        connection.exec_driver_sql("SET application_name = 'mlflow-server'")
        assert mlflow_upgrade(settings, "apply", "--yes") == 1
    said = capsys.readouterr().err
    assert "1 other session(s) are connected to MLflow's database" in said
    assert "mlflow-server" in said
    assert "Stop the MLflow server first, or add --online" in said
    assert snapshot(pg, old_store) == before


def test_an_upgrade_killed_half_way_leaves_a_consistent_store_that_apply_then_upgrades(
    pg: Databases, settings: Settings, old_store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(pg, old_store)
    env = {
        **pg.env(settings.api_db_name),
        "POSTGRES_DB": old_store,
        "BACKUP_DIR": str(settings.backup_dir),
        "MIGRATION_LOCK_TIMEOUT": "60",
    }
    with another_transaction(pg, old_store) as holder:
        holder.exec_driver_sql("LOCK TABLE jobs IN ACCESS SHARE MODE")  # b7e2c1a4d9f3 alters jobs: it waits here
        upgrade = subprocess.Popen(
            [sys.executable, "-m", "app", "mlflow-upgrade", "apply", "--yes", "--online"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        waiting = "SELECT 1 FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'"
        deadline = time.monotonic() + 60
        while not pg.query(old_store, waiting, old_store):
            assert upgrade.poll() is None, "the upgrade ended before it reached the lock"
            assert time.monotonic() < deadline, "the upgrade never reached the lock"
            time.sleep(0.05)
        upgrade.send_signal(signal.SIGKILL)
        upgrade.wait()
        # Its server session notices within a second that nobody is there, and rolls back.
        deadline = time.monotonic() + 10
        while pg.query(old_store, waiting, old_store):
            assert time.monotonic() < deadline, "the killed upgrade's session went on waiting"
            time.sleep(0.05)
    assert snapshot(pg, old_store) == before
    assert mlflow_upgrade(settings) == 0
    assert f"at {OLD_REVISION}; MLflow 3.17.2's head is {HEAD}: {len(PENDING)} revision(s) pending" in (
        capsys.readouterr().out
    )
    assert mlflow_upgrade(settings, "apply", "--yes") == 0
    assert revision_of(pg, old_store) == [HEAD]


def test_mlflow_in_a_schema_of_a_database_shared_with_the_api(
    pg: Databases, empty_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = pg.settings(
        empty_db, postgres_db=empty_db, api_db_schema="api", backup_dir=tmp_path / "backups", migration_lock_timeout=1
    )
    assert main(["migrate"], settings=settings) == 0
    pg.query(empty_db, "CREATE SCHEMA tracking")
    url = sa.make_url(pg.psycopg_url(empty_db)).update_query_dict({"options": "-csearch_path=tracking"})
    build_old_store(url.render_as_string(hide_password=False))
    api_before = snapshot(pg, empty_db, only="api")
    store_before = snapshot(pg, empty_db, only="tracking")
    assert mlflow_upgrade(settings) == 0
    assert f"MLflow's schema 'tracking' of database '{empty_db}': at {OLD_REVISION}" in capsys.readouterr().out
    assert mlflow_upgrade(settings, "apply", "--yes") == 0
    assert revision_of(pg, empty_db, "tracking") == [HEAD]
    assert snapshot(pg, empty_db, only="api") == api_before
    (backup,) = settings.backup_dir.glob(f"mlflow-{empty_db}-tracking-*-{OLD_REVISION}.dump")
    assert mlflow_upgrade(settings, "restore", str(backup), "--yes") == 0
    assert same_store(snapshot(pg, empty_db, only="tracking"), store_before)
    assert snapshot(pg, empty_db, only="api") == api_before
    assert main(["current"], settings=settings) == 0  # the API's own state, in its schema, as before
    assert f"API database '{empty_db}': " in capsys.readouterr().out


def test_restore_refuses_what_is_not_a_backup_of_the_store(
    pg: Databases, settings: Settings, old_store: str, api_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(pg, old_store)
    notes = tmp_path / "notes.dump"
    notes.write_text("not a dump")
    assert main(["backup"], settings=settings) == 0
    (api_dump,) = settings.backup_dir.glob(f"{api_db}*")
    capsys.readouterr()
    for path, says in [
        (tmp_path / "missing.dump", "missing.dump: no such file"),
        (notes, "notes.dump is not a pg_dump archive"),
        (api_dump, f"{api_dump.name} holds no MLflow store in schema 'public'; nothing was changed"),
    ]:
        assert mlflow_upgrade(settings, "restore", str(path), "--yes") == 1
        assert says in capsys.readouterr().err
    assert mlflow_upgrade(settings, "plan", str(notes)) == 1
    assert "plan takes no file; only `restore` does" in capsys.readouterr().err
    assert snapshot(pg, old_store) == before
