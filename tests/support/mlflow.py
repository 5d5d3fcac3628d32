"""MLflow's own schema, built by MLflow's own migrations, for the tests that prove it is never touched."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any
from unittest import mock

import sqlalchemy as sa

from app.db.server import embedded_bin_dir
from tests.support.databases import Databases

NO_POOL = "MLFLOW_SQLALCHEMYSTORE_POOLCLASS"


def mlflow_db_upgrade(url: str) -> None:
    """`mlflow db upgrade URL`, in this process: the tests import MLflow anyway, and a second import costs seconds."""
    from mlflow.db import upgrade  # only the tests that use MLflow pay for importing it

    # No pooled connection stays behind: the template is cloned right after, which needs it unused.
    before = os.environ.get(NO_POOL)
    os.environ[NO_POOL] = "NullPool"
    try:
        assert upgrade.callback is not None
        upgrade.callback(url)
    finally:
        if before is None:
            del os.environ[NO_POOL]
        else:
            os.environ[NO_POOL] = before


# A revision of MLflow 3.17.2 six revisions before its head: pending are tables created (scheduler_leases), a column
# retyped (experiment_tags.value), indexes and a foreign key, and a revision that reads the live store.
OLD_REVISION = "c3d9e7f1a2b4"


def build_old_store(url: str, revision: str = OLD_REVISION) -> None:
    """A store made by MLflow's own revision scripts, up to `revision` only (what an older MLflow left behind)."""
    from alembic import command
    from mlflow.store.db.utils import _get_alembic_config
    from mlflow.store.tracking.dbmodels.initial_models import Base

    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        # MLflow's first revision alters tables made before MLflow used Alembic: its store starts from these.
        Base.metadata.create_all(engine)
        command.upgrade(_get_alembic_config(url), revision)  # type: ignore[no-untyped-call]
    finally:
        engine.dispose()


@contextmanager
def mlflow_at(revision: str) -> Iterator[None]:
    """MLflow's client on a store at an old `revision`, as the MLflow of that day used it: never upgrading it.

    MLflow's stores upgrade a store missing any table of their head on first use, and refuse any other revision: both
    are turned off here, and any attempt to migrate fails the test.
    """
    import mlflow.store.db.utils as db_utils
    from mlflow.store.jobs.sqlalchemy_store import SqlAlchemyJobStore
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("MLflow's client tried to migrate the store it was filling")

    def at_revision(engine: sa.Engine) -> None:
        assert db_utils._get_schema_version(engine) == revision  # type: ignore[no-untyped-call]

    registry = "mlflow.store.model_registry.sqlalchemy_store"
    patches: list[Any] = [
        mock.patch.object(db_utils, "_all_tables_exist", return_value=True),
        mock.patch.object(db_utils, "_initialize_tables", refuse),
        mock.patch.object(db_utils, "_upgrade_db", refuse),
        mock.patch.object(db_utils, "_verify_schema", at_revision),
        mock.patch(f"{registry}._all_tables_exist", return_value=True),
        mock.patch(f"{registry}._initialize_tables", refuse),
    ]
    with ExitStack() as stack:
        for patch in patches:
            stack.enter_context(patch)
        try:
            yield
        finally:
            # Each store keeps an engine per URI at class level: close them, or the database stays in use.
            for store in (SqlAlchemyStore, RegistryStore, SqlAlchemyJobStore):
                for engine in store._engine_map.values():
                    engine.dispose()
                store._engine_map.clear()


def fill_store(url: str, metrics: int, revision: str = OLD_REVISION) -> None:
    """Experiments, runs with params, tags and `metrics` metric values, and a registered model, through MLflow's
    client on a store at `revision`."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    with mlflow_at(revision):
        client = MlflowClient(tracking_uri=url, registry_uri=url)
        runs = []
        for n in range(2):
            experiment = client.create_experiment(f"bike-demand-{n}", tags={"team": "bikes", "long": "x" * 4000})
            for r in range(2):
                run = client.create_run(experiment, tags={"mlflow.runName": f"run-{r}"})
                params = [Param(f"p{k}", str(k)) for k in range(5)]
                client.log_batch(run.info.run_id, params=params, tags=[RunTag("stage", "dev")])
                runs.append(run.info.run_id)
        per_run = metrics // len(runs)
        for run_id in runs:
            for start in range(0, per_run, 1000):  # MLflow takes 1000 metric values a batch
                values = [
                    Metric(f"rmse{s % 3}", float(s), 1_700_000_000_000 + s, s)
                    for s in range(start, min(start + 1000, per_run))
                ]
                client.log_batch(run_id, metrics=values)
        client.set_terminated(runs[0])
        model = client.create_registered_model("bike-demand")
        client.create_model_version(model.name, f"runs:/{runs[0]}/model", run_id=runs[0])


# The schemas a snapshot covers: every one of the database's but `$1` (when given), or only `$2` (when given).
_COVERED = (
    "schemaname NOT IN ('pg_catalog', 'information_schema') AND schemaname IS DISTINCT FROM $1 "
    "AND ($2::text IS NULL OR schemaname = $2)"
)
_TABLES = f"SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE {_COVERED} ORDER BY 1"
_SEQUENCES = (
    f"SELECT format('%I.%I', schemaname, sequencename), last_value FROM pg_sequences WHERE {_COVERED} ORDER BY 1"
)


@dataclass(frozen=True)
class Snapshot:
    """MLflow's schema as pg_dump prints it, and a digest of every table's rows and every sequence's position."""

    schema: str
    tables: dict[str, tuple[int, str]]
    sequences: dict[str, int | None]


def snapshot(pg: Databases, database: str, api_schema: str | None = None, *, only: str | None = None) -> Snapshot:
    """Everything in `database` but the API's own schema (when it has one there); or schema `only`, alone."""
    env = {**os.environ, **pg.address.libpq_env(database)}
    # A fixed \restrict key: pg_dump draws a random one per run, which would differ between two identical dumps.
    dump = [str(embedded_bin_dir() / "pg_dump"), "--schema-only", "--restrict-key=bikerental"]
    dump += [f"--exclude-schema={api_schema}"] if api_schema else []
    dump += [f"--schema={only}"] if only else []
    ddl = subprocess.run(dump, env=env, capture_output=True, text=True, check=True).stdout
    tables: dict[str, tuple[int, str]] = {}
    for (table,) in pg.query(database, _TABLES, api_schema, only):
        digest = f"SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM {table} t"
        count, md5 = pg.query(database, digest)[0]
        tables[table] = (count, md5)
    sequences = dict(pg.query(database, _SEQUENCES, api_schema, only))
    return Snapshot(schema=ddl, tables=tables, sequences=sequences)
