"""`python -m app <command>`: the one entry point behind every `just` recipe."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.backup import backup_before_change, backup_now
from app.db.checksums import verify_checksums
from app.db.engine import api_connection
from app.db.guard import check_database_is_ours
from app.db.lint import MigrationLintError, lint_migrations
from app.db.migrations import VERSIONS_DIR, Revisions, alembic_config, database_revisions, show_migration_steps
from app.db.provision import prepare_api_database
from app.db.reset import drop_api_tables
from app.db.restore import choose_archive, read_archive, restore_archive
from app.db.scratch import scratch_database
from app.db.server import embedded_bin_dir, stop_embedded
from app.errors import SetupError
from app.mlflow_server import run_mlflow_server
from app.services.admins import create_admin, validated_account
from app.services.passwords import password_hasher
from app.services.seeder import RoleSeeder
from app.settings import Settings, get_settings

Handler = Callable[[argparse.Namespace, Settings], int]


def _config(settings: Settings) -> Config:
    return alembic_config(settings, configure_logging=False)


def _print_current(settings: Settings) -> None:
    revisions = Revisions(_config(settings))

    async def read() -> frozenset[str]:
        async with api_connection(settings) as connection:
            await connection.run_sync(check_database_is_ours, revisions.known)
            await connection.run_sync(verify_checksums, revisions.script)
            return await connection.run_sync(database_revisions)

    current = asyncio.run(read())
    if not current:
        state = "no migration applied; run `just migrate`"
    elif current == revisions.heads:
        state = f"{', '.join(sorted(current))} (head)"
    else:
        state = f"{', '.join(sorted(current))}, behind head {', '.join(sorted(revisions.heads))}; run `just migrate`"
    print(f"API database '{settings.api_db_name}': {state}")


def _backup_first(
    settings: Settings, action: str, *, unless_at: frozenset[str] | None = None, spare: Path | None = None
) -> None:
    """A pg_dump before a command changes a database that holds rows (AUTO_BACKUP=false: never)."""
    known = Revisions(_config(settings)).known
    path = backup_before_change(settings, known, action, unless_at=unless_at, spare=spare)
    if path is not None:
        print(f"Backed up '{settings.api_db_name}' to {os.path.relpath(path)} before {action}.")


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    show_migration_steps()
    heads = Revisions(_config(settings)).heads if args.revision in {"head", "heads"} else None
    _backup_first(settings, "migrating", unless_at=heads)
    command.upgrade(_config(settings), args.revision)
    _print_current(settings)
    return 0


def cmd_downgrade(args: argparse.Namespace, settings: Settings) -> int:
    show_migration_steps()
    _backup_first(settings, "downgrading")
    command.downgrade(_config(settings), args.revision)
    _print_current(settings)
    return 0


def cmd_current(args: argparse.Namespace, settings: Settings) -> int:
    _print_current(settings)
    return 0


def cmd_history(args: argparse.Namespace, settings: Settings) -> int:
    command.history(_config(settings))
    return 0


def cmd_seed(args: argparse.Namespace, settings: Settings) -> int:
    seeder = RoleSeeder(Revisions(_config(settings)))

    async def seed() -> str:
        async with api_connection(settings) as connection:
            return (await seeder.run(AsyncSession(bind=connection))).summary()

    print(asyncio.run(seed()))
    return 0


def cmd_init(args: argparse.Namespace, settings: Settings) -> int:
    cmd_migrate(argparse.Namespace(revision="head"), settings)
    return cmd_seed(args, settings)


def cmd_revision(args: argparse.Namespace, settings: Settings) -> int:
    message = " ".join(args.message).strip()
    if not message and sys.stdin.isatty():
        message = input("Migration message (e.g. 'Add phone_number to users table'): ").strip()
    if not message:
        raise SetupError('a revision needs a message: just revision "Add phone_number to users table"')
    config = _config(settings)
    if args.version_path:
        # Tests write into a folder of their own, beside the project's revisions.
        config.set_main_option("version_locations", os.pathsep.join([str(VERSIONS_DIR), args.version_path]))
    Revisions(config).require_one_head()
    scripts = command.revision(config, message=message, autogenerate=not args.empty, version_path=args.version_path)
    for script in scripts if isinstance(scripts, list) else [scripts]:
        if script is not None:
            print(f"Wrote {os.path.relpath(script.path)}: review it, then run `just migrate`.")
    return 0


def cmd_reset(args: argparse.Namespace, settings: Settings) -> int:
    name = settings.api_db_name
    if not args.yes:
        if not sys.stdin.isatty():
            raise SetupError("reset drops the API's tables and needs confirmation: run `just reset --yes`")
        answer = input(f"Drop the API's tables (users, roles, user_roles and Alembic's) from '{name}'? [y/N] ")
        if answer.strip().lower() not in {"y", "yes"}:
            print("Nothing dropped.")
            return 1
    _backup_first(settings, "resetting")
    known = Revisions(_config(settings)).known

    async def reset() -> list[str]:
        async with api_connection(settings) as connection:
            return await connection.run_sync(drop_api_tables, known, settings)

    dropped = asyncio.run(reset())
    print(f"Dropped from '{name}': {', '.join(dropped) or 'nothing (no API tables)'}. Run `just init` to rebuild.")
    return 0


def cmd_sql(args: argparse.Namespace, settings: Settings) -> int:
    command.upgrade(_config(settings), args.revision, sql=True)
    return 0


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    path = backup_now(settings, Revisions(_config(settings)).known)
    print(f"Backed up '{settings.api_db_name}' to {os.path.relpath(path)}.")
    return 0


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    name = settings.api_db_name
    archive = read_archive(choose_archive(settings, args.file), settings)
    shown = os.path.relpath(archive.path)
    if not args.yes:
        if not sys.stdin.isatty():
            raise SetupError(f"restore replaces the API's tables in '{name}' and needs confirmation: add --yes")
        answer = input(f"Replace the API's tables in '{name}' with {shown} (taken {archive.created})? [y/N] ")
        if answer.strip().lower() not in {"y", "yes"}:
            print("Nothing restored.")
            return 1
    _backup_first(settings, "restoring", spare=archive.path)
    restore_archive(settings, archive, Revisions(_config(settings)).known)
    print(f"Restored '{name}' from {shown}.")
    _print_current(settings)
    return 0


def cmd_lint_migrations(args: argparse.Namespace, settings: Settings) -> int:
    revisions, findings = lint_migrations(_config(settings))
    for finding in findings:
        print(finding)
    if findings:
        raise MigrationLintError(
            f"{len(findings)} finding(s) in the migrations, each can stall the service or lose data; "
            "follow its way out, or mark a deliberate one"
        )
    print(f"{len(revisions)} revisions linted with squawk: none locks the service out or loses data.")
    return 0


def _verify_applied_revisions(settings: Settings) -> None:
    revisions = Revisions(_config(settings))

    async def verify() -> None:
        async with api_connection(settings) as connection:
            await connection.run_sync(check_database_is_ours, revisions.known)
            await connection.run_sync(verify_checksums, revisions.script)

    asyncio.run(verify())


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    _verify_applied_revisions(settings)
    # Compare the models with a scratch database built by the migrations, not with whatever state the
    # developer's database is in.
    with scratch_database(settings, "check") as scratch:
        config = _config(scratch)
        command.upgrade(config, "head")
        command.check(config)
    print("Models and migrations agree.")
    return 0


def cmd_psql(args: argparse.Namespace, settings: Settings) -> int:
    address = asyncio.run(prepare_api_database(settings))
    psql = str(embedded_bin_dir() / "psql")
    os.execve(psql, [psql, *args.psql_args], {**os.environ, **address.libpq_env(settings.api_db_name)})


def cmd_db_stop(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.embedded:
        print(f"API_DB_HOST is set ({settings.api_db_host}): that server is not this project's to stop.")
        return 0
    stopped = stop_embedded(settings.embedded_db_dir)
    print("Embedded PostgreSQL stopped." if stopped else "Embedded PostgreSQL was not running.")
    return 0


def _admin_password(settings: Settings) -> str:
    if settings.admin_password is not None:
        return settings.admin_password.get_secret_value()
    if not sys.stdin.isatty():
        raise SetupError("no terminal to ask for the password: set ADMIN_PASSWORD for automation")
    password = getpass.getpass("Admin password: ")
    if password != getpass.getpass("Again: "):
        raise SetupError("the two passwords differ; nothing changed")
    return password


def cmd_create_admin(args: argparse.Namespace, settings: Settings) -> int:
    account = validated_account(args.username, args.email, _admin_password(settings))
    revisions = Revisions(_config(settings))

    async def create() -> str:
        async with api_connection(settings) as connection:
            report = await create_admin(AsyncSession(bind=connection), revisions, password_hasher(settings), account)
            return report.summary()

    print(asyncio.run(create()))
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from app.http.serve import serve  # the web stack loads only for this command

    serve(settings)
    return 0


def cmd_mlflow(args: argparse.Namespace, settings: Settings) -> int:
    return run_mlflow_server(settings, host=args.host, port=args.port, workers=args.workers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app", description="bikerental-api database and service")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Handler, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(handler=handler)
        return p

    add("serve", cmd_serve, "run the service (migrates and seeds first unless told not to)")
    add("init", cmd_init, "migrate to head, then seed the default roles")
    add("migrate", cmd_migrate, "apply pending migrations").add_argument("revision", nargs="?", default="head")
    p = add("revision", cmd_revision, "write a new migration, autogenerated from the models")
    p.add_argument("message", nargs="*", help="the message; quotes are optional")
    p.add_argument("--empty", action="store_true", help="an empty migration to fill by hand")
    p.add_argument("--version-path", help=argparse.SUPPRESS)
    p = add("downgrade", cmd_downgrade, "roll back migrations: one step by default, `base` for all")
    p.add_argument("revision", nargs="?", default="-1")
    add("current", cmd_current, "show the API database's revision")
    add("history", cmd_history, "list the migrations")
    add("seed", cmd_seed, "create the default roles that are missing (idempotent)")
    p = add("reset", cmd_reset, "drop the API's tables and version table (asks first)")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    add("sql", cmd_sql, "print the SQL of upgrading to head, without a database").add_argument(
        "revision", nargs="?", default="head"
    )
    add("check", cmd_check, "fail when the models and the migrations disagree, or an applied revision changed")
    add("lint-migrations", cmd_lint_migrations, "lint each revision's SQL with squawk (locks, lost data)")
    add("backup", cmd_backup, "pg_dump the API database into the backup folder")
    p = add("restore", cmd_restore, "restore the API database from a backup (the newest by default; asks first)")
    p.add_argument("file", nargs="?", help="an archive path, or a file name in the backup folder")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p = add("create-admin", cmd_create_admin, "create the first admin (password asked twice, or ADMIN_PASSWORD)")
    p.add_argument("username")
    p.add_argument("email")
    add("psql", cmd_psql, "open psql on the API database; other arguments go to psql")
    add("db-stop", cmd_db_stop, "stop the embedded PostgreSQL")
    p = add("mlflow", cmd_mlflow, "run an MLflow tracking server in MLflow's database (POSTGRES_DB)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--workers", type=int, default=1)
    return parser


def main(argv: Sequence[str] | None = None, *, settings: Settings | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # psql takes its own options (`just psql -c 'select 1'`); every other command takes only ours.
    if args.handler is cmd_psql:
        args.psql_args = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        handler: Handler = args.handler
        return handler(args, settings or get_settings())
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]).upper()
            message = error["msg"].removeprefix("Value error, ")
            print(f"error: invalid setting{' ' + where if where else ''}: {message}", file=sys.stderr)
        return 2
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (`just sql | head`): nothing left to say.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
