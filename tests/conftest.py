"""Fixtures: one migrated template database per run, a copy of it per worker, emptied for each test."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from alembic import command
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.http.app import create_app
from app.migrations.revisions import alembic_config
from app.settings import PROJECT_ROOT
from tests.support.databases import FAST_HASHING, Databases, ReusedDatabase
from tests.support.mlflow import mlflow_db_upgrade
from tests.support.pgbouncer import Bouncer, start_pgbouncer
from tests.support.templates import shared_template
from tests.support.tools import shared_redis

# The longest tests start first, so that two workers finish together instead of one waiting on the other's last test.
LONGEST_FIRST = (
    "test_kubernetes_rehearsal.py",
    "test_rollout_across_releases.py",
    "test_contract.py",
    "test_rolling_restart.py",
    "test_compat.py",
    "test_mlflow_untouched.py",
    "test_mlflow_upgrade.py",
    "test_concurrent_index.py",
    "test_servers.py",
)


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: `-p no:xdist` runs without it
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one worker more than cores, at most four. Many tests wait on a server or a subprocess, and the extra
    worker fills those waits (on 2 cores: 3 workers, a fifth less time than 2)."""
    return min(4, (os.cpu_count() or 1) + 1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        return next((i for i, name in enumerate(LONGEST_FIRST) if item.path.name == name), len(LONGEST_FIRST))

    items.sort(key=rank)  # stable: the order within each file stays


@pytest.fixture(scope="session")
def pg() -> Iterator[Databases]:
    databases = Databases()
    yield databases
    shutil.rmtree(databases.fields["backup_dir"], ignore_errors=True)


@pytest.fixture(scope="session")
def shared_folder(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path | None:
    """A folder the workers of this run share (None in a run without workers)."""
    is_worker = hasattr(request.config, "workerinput")  # what pytest-xdist gives each worker's config
    return tmp_path_factory.getbasetemp().parent if is_worker else None


@pytest.fixture(scope="session")
def migrated_template(pg: Databases, shared_folder: Path | None) -> Iterator[str]:
    """A database built by the real migrations; tests get copies, never this one."""

    def migrate(name: str) -> None:
        command.upgrade(alembic_config(pg.settings(name), configure_logging=False), "head")

    yield from shared_template(pg, shared_folder, "template", migrate)


@pytest.fixture(scope="session")
def reused_db(pg: Databases, migrated_template: str) -> Iterator[ReusedDatabase]:
    reused = ReusedDatabase(pg, migrated_template)
    yield reused
    reused.drop()


@pytest.fixture
def api_db(reused_db: ReusedDatabase) -> str:
    """A database at head with no rows, of this test's own while it runs."""
    return reused_db.take()


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """A copy of the project's code and migrations, for a test that adds a revision or edits a model as a user would."""
    root = tmp_path / "project"
    ignore = shutil.ignore_patterns("__pycache__")
    for folder in ("app", "alembic"):
        shutil.copytree(PROJECT_ROOT / folder, root / folder, ignore=ignore)
    for name in ("alembic.ini", "pyproject.toml"):
        shutil.copy(PROJECT_ROOT / name, root)
    return root


@pytest.fixture
def empty_db(pg: Databases) -> Iterator[str]:
    with pg.temporary("empty") as name:
        yield name


@pytest.fixture(scope="session")
def mlflow_template(pg: Databases, shared_folder: Path | None) -> Iterator[str]:
    """A real MLflow tracking schema, built by MLflow's own migrations."""
    yield from shared_template(
        pg, shared_folder, "mlflow_template", lambda name: mlflow_db_upgrade(pg.psycopg_url(name))
    )


@pytest.fixture
def mlflow_db(pg: Databases, mlflow_template: str) -> Iterator[str]:
    with pg.temporary("mlflow", template=mlflow_template) as name:
        yield name


@pytest.fixture
async def client(pg: Databases, api_db: str) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """The service on a database of this test's own, started through its real lifespan."""
    async with AsyncTestClient(create_app(pg.settings(api_db, **FAST_HASHING))) as client:
        yield client


@pytest.fixture(scope="session")
def pgbouncer(pg: Databases) -> Iterator[Bouncer]:
    """A PgBouncer in transaction mode in front of the test server, shared by the tests of one worker."""
    yield from start_pgbouncer(pg)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """Redis on 127.0.0.1:6379, which .ci/run starts: a database of the tests' own."""
    return shared_redis()
