"""No command writes to MLflow's database, nor to one another Alembic project manages."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.databases import Databases, run_app

SNAPSHOT = """
SELECT table_name, column_name, data_type, is_nullable, column_default
FROM information_schema.columns WHERE table_schema = 'public' ORDER BY table_name, ordinal_position
"""


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
def test_commands_refuse_mlflows_database(pg: Databases, mlflow_db: str, args: list[str]) -> None:
    pg.query(mlflow_db, "INSERT INTO experiments (name, lifecycle_stage) VALUES ('bikes', 'active')")
    before = snapshot(pg, mlflow_db)
    result = run_app(args, pg.env(mlflow_db))
    assert result.returncode == 1
    assert f"database '{mlflow_db}' holds MLflow's tracking tables" in result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(pg, mlflow_db) == before


@pytest.mark.parametrize("args", [["upgrade", "head"], ["stamp", "head"], ["downgrade", "base"]], ids=" ".join)
def test_plain_alembic_refuses_mlflows_database(pg: Databases, mlflow_db: str, args: list[str]) -> None:
    before = snapshot(pg, mlflow_db)
    result = subprocess.run(
        [sys.executable, "-m", "alembic", *args], env=pg.env(mlflow_db), capture_output=True, text=True, check=False
    )
    said = result.stdout + result.stderr
    assert result.returncode != 0
    assert "FAILED:" in said
    assert "MLflow's tracking tables" in said
    assert "Traceback" not in said
    assert snapshot(pg, mlflow_db) == before


def test_a_foreign_alembic_revision_is_refused(pg: Databases, empty_db: str) -> None:
    pg.query(empty_db, "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
    pg.query(empty_db, "INSERT INTO alembic_version VALUES ('dc11669786a5')")
    result = run_app(["migrate"], pg.env(empty_db))
    assert result.returncode == 1
    assert "revision dc11669786a5, which is not one of this project's migrations" in result.stderr
    rows = pg.query(empty_db, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
    assert [row[0] for row in rows] == ["alembic_version"]
