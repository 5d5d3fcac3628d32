"""No command writes to MLflow's database, nor to one another Alembic project manages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import main
from app.settings import PROJECT_ROOT
from tests.support.databases import Databases

pytestmark = pytest.mark.slow  # MLflow's own schema, built by its migrations

SNAPSHOT = """
SELECT table_name, column_name, data_type, is_nullable, column_default
FROM information_schema.columns WHERE table_schema = 'public' ORDER BY table_name, ordinal_position
"""


def run_alembic(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Plain `alembic ARGS`, as the guide's manual commands run it: its exit code and all it said."""
    result = subprocess.run(
        [sys.executable, "-m", "alembic", *args], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, check=False
    )
    return result.returncode, result.stdout + result.stderr


def snapshot(pg: Databases, db: str) -> tuple[object, ...]:
    """The schema, the version table and the number of rows of every table."""
    schema = [tuple(row) for row in pg.query(db, SNAPSHOT)]
    versions = [row[0] for row in pg.query(db, "SELECT version_num FROM alembic_version")]
    tables = sorted({row[0] for row in schema})
    counts = pg.query(db, " UNION ALL ".join(f"SELECT '{t}', count(*) FROM {t}" for t in tables))
    return schema, versions, sorted(tuple(row) for row in counts)


@pytest.mark.parametrize(
    "args",
    [["migrate"], ["init"], ["downgrade"], ["downgrade", "base"], ["seed"], ["reset", "--yes"], ["current"]],
    ids=" ".join,
)
def test_commands_refuse_mlflows_database(
    pg: Databases, mlflow_db: str, args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    pg.query(mlflow_db, "INSERT INTO experiments (name, lifecycle_stage) VALUES ('bikes', 'active')")
    before = snapshot(pg, mlflow_db)
    assert main(args, settings=pg.settings(mlflow_db)) == 1
    assert f"database '{mlflow_db}' holds MLflow's tracking tables" in capsys.readouterr().err
    assert snapshot(pg, mlflow_db) == before


@pytest.mark.parametrize("args", [["upgrade", "head"], ["stamp", "head"], ["downgrade", "base"]], ids=" ".join)
def test_plain_alembic_refuses_mlflows_database(pg: Databases, mlflow_db: str, args: list[str]) -> None:
    before = snapshot(pg, mlflow_db)
    returncode, said = run_alembic(args, pg.env(mlflow_db))
    assert returncode != 0
    assert "FAILED:" in said
    assert "MLflow's tracking tables" in said
    assert "Traceback" not in said
    assert snapshot(pg, mlflow_db) == before


def test_a_foreign_alembic_revision_is_refused(
    pg: Databases, empty_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pg.query(empty_db, "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
    pg.query(empty_db, "INSERT INTO alembic_version VALUES ('dc11669786a5')")
    assert main(["migrate"], settings=pg.settings(empty_db)) == 1
    assert "revision dc11669786a5, which is not one of this project's migrations" in capsys.readouterr().err
    rows = pg.query(empty_db, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
    assert [row[0] for row in rows] == ["alembic_version"]


@pytest.fixture
def other_projects_db(pg: Databases, empty_db: str) -> str:
    """A database another Alembic project manages, with a `users` table of its own that holds a row."""
    pg.query(empty_db, "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
    pg.query(empty_db, "INSERT INTO alembic_version VALUES ('dc11669786a5')")
    pg.query(empty_db, "CREATE TABLE users (id int PRIMARY KEY, login text)")
    pg.query(empty_db, "INSERT INTO users VALUES (1, 'ann')")
    return empty_db


@pytest.mark.parametrize("args", [["reset", "--yes"], ["seed"], ["downgrade"], ["migrate"]], ids=" ".join)
def test_commands_refuse_another_projects_alembic_revision(
    pg: Databases, other_projects_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    before = snapshot(pg, other_projects_db)
    # With backups on, the backup's probe refuses first; with them off, the command's own guard must.
    for auto_backup in (True, False):
        settings = pg.settings(other_projects_db, backup_dir=tmp_path, auto_backup=auto_backup)
        assert main(args, settings=settings) == 1
        assert "revision dc11669786a5, which is not one of this project's migrations" in capsys.readouterr().err
    assert snapshot(pg, other_projects_db) == before
    assert list(tmp_path.iterdir()) == []


def test_plain_alembic_stamp_refuses_another_projects_revision(pg: Databases, other_projects_db: str) -> None:
    before = snapshot(pg, other_projects_db)
    returncode, said = run_alembic(["stamp", "head"], pg.env(other_projects_db))
    assert returncode != 0
    assert "FAILED: database" in said
    assert "revision dc11669786a5, which is not one of this project's migrations" in said
    assert "Traceback" not in said
    assert snapshot(pg, other_projects_db) == before


@pytest.fixture
def mlflow_in_schema_tracking(pg: Databases, mlflow_db: str) -> str:
    """A database with MLflow's tables in schema `tracking`, as MLflow run with `?options=-csearch_path=tracking`."""
    pg.query(mlflow_db, "ALTER SCHEMA public RENAME TO tracking")
    pg.query(mlflow_db, "CREATE SCHEMA public")
    return mlflow_db


def schemas_and_tables(pg: Databases, db: str) -> list[tuple[str, str]]:
    query = (
        "SELECT schemaname, tablename FROM pg_tables WHERE schemaname IN ('public', 'tracking', 'api') ORDER BY 1, 2"
    )
    return [(row[0], row[1]) for row in pg.query(db, query)]


@pytest.mark.parametrize("args", [["migrate"], ["seed"], ["reset", "--yes"]], ids=" ".join)
def test_mlflows_tables_in_any_schema_refuse_the_api_there(
    pg: Databases, mlflow_in_schema_tracking: str, args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    before = schemas_and_tables(pg, mlflow_in_schema_tracking)
    assert main(args, settings=pg.settings(mlflow_in_schema_tracking)) == 1
    err = capsys.readouterr().err
    assert f"database '{mlflow_in_schema_tracking}' holds MLflow's tracking tables (schema tracking)" in err
    assert "or API_DB_SCHEMA to a schema of the API's own" in err
    assert schemas_and_tables(pg, mlflow_in_schema_tracking) == before


def test_api_db_schema_that_holds_mlflows_tables_is_refused(
    pg: Databases, mlflow_in_schema_tracking: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = schemas_and_tables(pg, mlflow_in_schema_tracking)
    settings = pg.settings(mlflow_in_schema_tracking, api_db_schema="tracking")
    assert main(["migrate"], settings=settings) == 1
    err = capsys.readouterr().err
    assert f"API_DB_SCHEMA 'tracking' of database '{mlflow_in_schema_tracking}' holds MLflow's tracking tables" in err
    assert schemas_and_tables(pg, mlflow_in_schema_tracking) == before
    # A schema of its own beside MLflow's is what API_DB_SCHEMA is for.
    assert main(["migrate"], settings=pg.settings(mlflow_in_schema_tracking, api_db_schema="api")) == 0
    assert ("api", "users") in schemas_and_tables(pg, mlflow_in_schema_tracking)
