"""MLflow's own schema upgrade, guarded: planned, rehearsed on a copy, applied with a proven backup, a lock and
time-outs, checked, and put back exactly as it was on any failure.

`mlflow db upgrade` runs every pending revision in one transaction with no lock time-out (tracking writes wait for
all of it), has failed half-way on real stores, and is irreversible. Here the revisions run on our connection in one
transaction (PostgreSQL's DDL is transactional: a failure, a lock time-out or a kill rolls all of it back), under
MIGRATION_LOCK_TIMEOUT and MIGRATION_STATEMENT_TIMEOUT, with the result checked before it commits.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from app.db.catalog import quote_ident
from app.db.engine import API_APPLICATION_NAME
from app.db.pg_tools import first_error, pg_tool
from app.errors import SetupError
from app.migrations.lint import SQUAWK_CONFIG, squawk_findings
from app.migrations.restore import fit_for_server, known_settings
from app.migrations.timeouts import set_timeouts
from app.mlflow.checks import TableStats, fingerprint, mlflow_schema_check, problems_after, table_stats
from app.mlflow.revisions import (
    MlflowScripts,
    RenderedSql,
    apply_revision,
    current_revision,
    mlflow_scripts,
    render_sql,
)
from app.mlflow.store import MlflowStore
from app.settings import Settings

# One upgrade of a store at a time; any constant works, this one spells "mlflowup".
ADVISORY_KEY = 0x6D6C666C6F777570 & 0x7FFFFFFFFFFFFFFF
APPLICATION = "bikerental-api mlflow-upgrade"
Say = Callable[[str], object]
_TOUCHED = re.compile(
    r"^\s*(?:ALTER TABLE|CREATE TABLE|UPDATE|DELETE FROM|INSERT INTO|DROP TABLE|CREATE (?:UNIQUE )?INDEX \S+ ON)"
    r"\s+(?:ONLY\s+)?(?:\w+\.)?\"?(\w+)",
    re.IGNORECASE | re.MULTILINE,
)


class UpgradeFailedError(SetupError):
    """A revision failed, or the upgraded store did not pass its checks; the store is as it was before."""


@dataclass(frozen=True)
class PlannedRevision:
    revision: str
    description: str
    rendered: RenderedSql
    findings: list[str]
    tables: dict[str, TableStats | None]  # None: a table the revision creates


@dataclass(frozen=True)
class Plan:
    store: MlflowStore
    current: str
    head: str
    revisions: list[PlannedRevision]


@dataclass(frozen=True)
class Step:
    revision: str
    description: str
    seconds: float
    error: str | None = None


@dataclass
class Run:
    """The revisions one upgrade ran, each timed; the first failure ends it."""

    steps: list[Step] = field(default_factory=list)

    @property
    def failed(self) -> Step | None:
        return next((step for step in self.steps if step.error), None)


def _read_only(store: MlflowStore) -> sa.Engine:
    engine = store.engine()
    sa.event.listen(engine, "connect", lambda dbapi, record: setattr(dbapi, "read_only", True))
    return engine


def _revision(store: MlflowStore) -> str | None:
    engine = _read_only(store)
    try:
        with engine.connect() as connection:
            return current_revision(connection)
    finally:
        engine.dispose()


def store_revision(store: MlflowStore, scripts: MlflowScripts) -> str:
    """The store's revision; refuses one the installed MLflow does not know (a newer MLflow migrated it)."""
    current = _revision(store)
    if current is None:
        raise SetupError(f"MLflow's {store} has no alembic_version: it is not a store MLflow made")
    if not scripts.knows(current):
        raise SetupError(
            f"MLflow's {store} is at revision {current}, which the installed MLflow does not have: a newer MLflow "
            "migrated it. Install that release (the `mlflow` extra and the image together)"
        )
    return current


def plan(store: MlflowStore) -> Plan:
    """The pending revisions: each one's SQL where offline mode renders it, squawk's review, the tables it touches."""
    scripts = mlflow_scripts()
    current = store_revision(store, scripts)
    engine = _read_only(store)
    try:
        with engine.connect() as connection:
            stats = table_stats(connection)
    finally:
        engine.dispose()
    planned, parent = [], current
    for script in scripts.pending(current):
        rendered = render_sql(scripts, parent, script.revision)
        touched = {table.lower() for table in _TOUCHED.findall(rendered.sql)} - {"alembic_version"}
        planned.append(
            PlannedRevision(
                script.revision,
                str(script.doc),
                rendered,
                _review(script.revision, rendered),
                {table: stats.get(table) for table in sorted(touched)},
            )
        )
        parent = script.revision
    return Plan(store, current, scripts.head, planned)


def _review(revision: str, rendered: RenderedSql) -> list[str]:
    """Squawk's findings on the revision's SQL, with the time-outs apply sets on its session."""
    if not rendered.sql.strip():
        return []
    with tempfile.TemporaryDirectory(prefix="mlflow-upgrade-") as folder:
        path = Path(folder) / f"{revision}.sql"
        path.write_text("SET lock_timeout = '5s';\nSET statement_timeout = '60s';\n" + rendered.sql)
        findings = squawk_findings([path], SQUAWK_CONFIG)
    # A partial rendering ends without its COMMIT: that is the rendering, not the revision.
    skipped = {"ban-uncommitted-transaction"} if rendered.needs_live_data else set()
    return [f"{item['rule_name']}: {item['message']}" for item in findings if item["rule_name"] not in skipped]


# ---- copies and backups ----


@contextmanager
def scratch_copy(store: MlflowStore, dump: Path, purpose: str) -> Iterator[str]:
    """A database made for the block from `dump` (the store's schema as it was), dropped after it."""
    name = f"{store.database[:30]}__mlflow_{purpose}_{time.time_ns() % 10**9}"
    _maintenance(store, f"CREATE DATABASE {quote_ident(name)}")
    try:
        # The dump makes the schema itself (`public` included): a new database has one already.
        engine = store.engine(name)
        with engine.begin() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {store.quoted_schema}")
        engine.dispose()
        restored = subprocess.run(
            [pg_tool("pg_restore"), "--no-owner", "--exit-on-error", f"--dbname={name}", str(dump)],
            env=store.libpq_env(name),
            capture_output=True,
            check=False,
        )
        if restored.returncode != 0:
            raise SetupError(f"restoring {dump} into a scratch database failed: {first_error(restored.stderr, 1)}")
        yield name
    finally:
        _maintenance(store, f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")


def _maintenance(store: MlflowStore, statement: str) -> None:
    """A statement outside any transaction on the server's maintenance database, as MLflow's user."""
    engine = sa.create_engine(
        store.address.url("postgres", driver="psycopg"), poolclass=sa.NullPool, isolation_level="AUTOCOMMIT"
    )
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(statement)
    except sa.exc.DBAPIError as exc:
        raise SetupError(f"{statement.split(' IF ')[0].split(' WITH ')[0]} failed: {exc.orig}".strip()) from exc
    finally:
        engine.dispose()


def _backup_prefix(store: MlflowStore) -> str:
    return f"mlflow-{store.database}-{store.schema}-"


def _backup_path(store: MlflowStore, settings: Settings, revision: str) -> Path:
    """BACKUP_DIR/mlflow-<database>-<schema>-<time>-<revision>.dump: the names sort by time."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return settings.backup_dir / f"{_backup_prefix(store)}{stamp}-{revision}.dump"


def dump_store(store: MlflowStore, path: Path) -> Path:
    """pg_dump of the store's schema (custom format) to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    dumped = subprocess.run(
        [pg_tool("pg_dump"), "--no-password", "--format=custom", f"--schema={store.schema}", f"--file={partial}"],
        env=store.libpq_env(),
        capture_output=True,
        check=False,
    )
    if dumped.returncode != 0:
        partial.unlink(missing_ok=True)
        raise SetupError(f"pg_dump of MLflow's {store} failed: {first_error(dumped.stderr, dumped.returncode)}")
    partial.rename(path)
    return path


# The statements that give a schema made anew the owner and grants the store's schema has now.
_SCHEMA_RIGHTS = sa.text(
    "SELECT format('ALTER SCHEMA %I OWNER TO %s;', n.nspname, n.nspowner::regrole) || coalesce(("
    "SELECT string_agg(format('GRANT %s ON SCHEMA %I TO %s;', a.privilege_type, n.nspname, "
    "CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END), ' ') "
    "FROM aclexplode(n.nspacl) a), '') FROM pg_namespace n WHERE n.nspname = :schema"
)


def restore_in_place(store: MlflowStore, dump: Path) -> None:
    """Put the store's schema back as the dump has it, in one transaction: dropped whole and restored, with the owner
    and grants it has now (a new `public` would otherwise belong to whoever restores it)."""
    script = subprocess.run(
        [pg_tool("pg_restore"), "--no-owner", "--file=-", str(dump)], capture_output=True, check=False
    )
    if script.returncode != 0:
        raise SetupError(f"pg_restore could not read {dump}: {first_error(script.stderr, script.returncode)}")
    engine = store.engine()
    try:
        with engine.connect() as connection:
            rights = connection.execute(_SCHEMA_RIGHTS, {"schema": store.schema}).scalar_one_or_none() or ""
            known = known_settings(connection)
    finally:
        engine.dispose()
    prologue = f"DROP SCHEMA IF EXISTS {store.quoted_schema} CASCADE;\nCREATE SCHEMA {store.quoted_schema};\n"
    # As the API's restore does: without the SETs an older server refuses (pg_restore 18's transaction_timeout).
    fitted = b"".join(fit_for_server(script.stdout.splitlines(keepends=True), known))
    body = re.sub(rb"^CREATE SCHEMA [^;]+;$", b"", fitted, flags=re.MULTILINE)
    restored = subprocess.run(
        [pg_tool("psql"), "--no-psqlrc", "--quiet", "--single-transaction", "--set=ON_ERROR_STOP=1", "--file=-"],
        input=prologue.encode() + body + f"\n{rights}\n".encode(),
        env=store.libpq_env(),
        capture_output=True,
        check=False,
    )
    if restored.returncode != 0:
        raise SetupError(f"restoring MLflow's {store} from {dump} failed: {first_error(restored.stderr, 1)}")


def _connected(store: MlflowStore, others: list[str], way_out: str = "") -> SetupError:
    return SetupError(
        f"{len(others)} other session(s) are connected to MLflow's database '{store.database}': {'; '.join(others)}. "
        f"Stop the MLflow server first{way_out}"
    )


# ---- running the revisions ----


def _guard(connection: sa.Connection, settings: Settings) -> None:
    """Time-outs on the session; a backend whose client died (a killed upgrade) notices within a second, and rolls
    back instead of holding its locks until its statement ends."""
    set_timeouts(connection, settings)
    connection.exec_driver_sql(f"SET application_name = '{APPLICATION}'")
    if connection.dialect.server_version_info and connection.dialect.server_version_info >= (14,):
        connection.exec_driver_sql("SET client_connection_check_interval = 1000")
    connection.commit()


def run_revisions(
    connection: sa.Connection,
    scripts: MlflowScripts,
    settings: Settings,
    say: Say,
    *,
    atomic: bool,
    check: Callable[[list[str]], list[str]] = lambda applied: [],
) -> Run:
    """Apply the pending revisions on `connection` (outside a transaction), timing each.

    `atomic`: one transaction for all of them, committed only when `check` (given the revisions applied) finds
    nothing wrong. Otherwise one transaction each, as far as the first failure (a rehearsal's timings).
    """
    _guard(connection, settings)
    start = current_revision(connection)
    connection.rollback()
    run = Run()
    whole = connection.begin() if atomic else None
    try:
        for script in scripts.pending(start):
            started = time.perf_counter()
            try:
                if atomic:
                    apply_revision(connection, scripts, script.revision)
                else:
                    with connection.begin():
                        apply_revision(connection, scripts, script.revision)
                error = None
            except sa.exc.DBAPIError as exc:
                error = f"{type(exc.orig).__name__}: {str(exc.orig).strip().splitlines()[0]}"
            step = Step(script.revision, str(script.doc), time.perf_counter() - started, error)
            run.steps.append(step)
            say(f"  {step.revision}  {step.seconds:7.3f} s  {step.description}{'  FAILED: ' + error if error else ''}")
            if error:
                break
        if whole is not None:
            applied = [step.revision for step in run.steps]
            problems = check(applied) if run.failed is None else []
            if problems:
                run.steps.append(Step("checks", "the upgraded store's checks", 0.0, "; ".join(problems)))
            (whole.rollback if run.failed else whole.commit)()
    finally:
        if connection.in_transaction():
            connection.rollback()
    return run


def rehearse(store: MlflowStore, settings: Settings, say: Say) -> Run:
    """Upgrade a copy of the store, one revision a transaction, timed; check it; drop it. The store is untouched."""
    scripts = mlflow_scripts()
    store_revision(store, scripts)
    with tempfile.TemporaryDirectory(prefix="mlflow-rehearse-") as folder:
        started = time.perf_counter()
        dump = dump_store(store, Path(folder) / "store.dump")
        with scratch_copy(store, dump, "rehearse") as copy:
            say(f"Copied the store into scratch database '{copy}' ({time.perf_counter() - started:.1f} s).")
            engine = store.engine(copy)
            try:
                with engine.connect() as connection:
                    before = table_stats(connection)
                    connection.rollback()
                    run = run_revisions(connection, scripts, settings, say, atomic=False)
                    if run.failed is None:
                        problems = problems_after(connection, scripts, before, [step.revision for step in run.steps])
                        problems += filter(None, [mlflow_schema_check(engine)])
                        if problems:
                            run.steps.append(Step("checks", "the upgraded copy's checks", 0.0, "; ".join(problems)))
            finally:
                engine.dispose()
    return run


def other_sessions(store: MlflowStore) -> list[str]:
    """Who else is connected to MLflow's database (but the API's own sessions, which never touch MLflow's tables)."""
    engine = store.engine()
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text(
                    "SELECT pid, usename, application_name, client_addr, state FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND backend_type = 'client backend' AND application_name NOT LIKE :ours"
                ),
                {"ours": f"{API_APPLICATION_NAME}%"},
            ).all()
    finally:
        engine.dispose()
    return [
        f"pid {row.pid} ({row.usename}{', ' + row.application_name if row.application_name else ''}, "
        f"{row.client_addr or 'local'}, {row.state})"
        for row in rows
    ]


@dataclass(frozen=True)
class Applied:
    run: Run
    backup: Path
    seconds: float


def apply(store: MlflowStore, settings: Settings, say: Say, *, online: bool = False) -> Applied | None:
    """Back up (and prove the backup), lock, upgrade in one transaction, check; None when there is nothing to do.

    Raises UpgradeFailedError, naming the revision, with the store exactly as it was.
    """
    scripts = mlflow_scripts()
    current = store_revision(store, scripts)
    if current == scripts.head:
        return None
    others = other_sessions(store)
    if others and not online:
        raise _connected(
            store,
            others,
            ", or add --online to go ahead (tracking writes then wait for the upgrade, at most "
            "MIGRATION_LOCK_TIMEOUT for each lock)",
        )
    started = time.perf_counter()
    backup = dump_store(store, _backup_path(store, settings, current))
    before = fingerprint(store)
    with scratch_copy(store, backup, "proof") as copy:
        # The dump is one snapshot: with nobody else connected, the store is still what it holds.
        if not others and fingerprint(store, copy) != before:
            raise SetupError(f"the backup {backup} does not restore to the store as it is; nothing was changed")
    say(f"Backed up MLflow's {store} to {backup}, and restored it into a scratch database to prove it.")
    engine = store.engine()
    try:
        with engine.connect() as connection:
            if not connection.execute(sa.text(f"SELECT pg_try_advisory_lock({ADVISORY_KEY})")).scalar_one():
                raise SetupError("another mlflow-upgrade of this store is running; nothing was changed")
            connection.commit()
            try:
                stats = table_stats(connection)
                connection.rollback()
                run = run_revisions(
                    connection,
                    scripts,
                    settings,
                    say,
                    atomic=True,
                    check=lambda applied: problems_after(connection, scripts, stats, applied),
                )
            finally:
                connection.execute(sa.text(f"SELECT pg_advisory_unlock({ADVISORY_KEY})"))
                connection.commit()
        said = mlflow_schema_check(engine) if run.failed is None else None
        problem = f"MLflow's own check after the upgrade: {said}" if said else None
    finally:
        engine.dispose()
    failed = run.failed
    if failed is None and problem is None:
        # The newest BACKUP_KEEP are kept, as of the API's own backups (the names sort by time).
        kept = sorted(backup.parent.glob(f"{_backup_prefix(store)}*.dump"))
        for old in kept[: -settings.backup_keep]:
            old.unlink(missing_ok=True)
        return Applied(run, backup, time.perf_counter() - started)
    # One transaction, rolled back: the store should be as it was. Should it not be, the backup puts it back.
    if fingerprint(store) != before:
        restore_in_place(store, backup)
    where = f"revision {failed.revision} ({failed.description}) failed: {failed.error}" if failed else str(problem)
    raise UpgradeFailedError(
        f"{where}. MLflow's {store} is exactly as it was, at {current}; the backup taken first is {backup}"
    )


def restore(store: MlflowStore, settings: Settings, dump: Path, say: Say) -> Path:
    """Put the store back as `dump` (a backup apply took) holds it, after a backup of it as it is now; returns that."""
    if not dump.is_file():
        raise SetupError(f"{dump}: no such file")
    listing = subprocess.run([pg_tool("pg_restore"), "--list", str(dump)], capture_output=True, check=False)
    if listing.returncode != 0:
        raise SetupError(f"{dump} is not a pg_dump archive: {first_error(listing.stderr, listing.returncode)}")
    if not re.search(rf"TABLE {re.escape(store.schema)} experiments ", listing.stdout.decode(errors="replace")):
        raise SetupError(f"{dump} holds no MLflow store in schema '{store.schema}'; nothing was changed")
    if others := other_sessions(store):
        raise _connected(store, others)
    now = dump_store(store, _backup_path(store, settings, _revision(store) or "none"))
    say(f"Backed up MLflow's {store} as it is now to {now}.")
    with scratch_copy(store, dump, "restore") as copy:
        wanted = fingerprint(store, copy)
    restore_in_place(store, dump)
    if fingerprint(store) != wanted:
        raise SetupError(f"MLflow's {store} does not match {dump} after the restore; {now} holds it as it was")
    return now
