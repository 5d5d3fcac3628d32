"""`python -m app <command>`: the one entry point behind every `just` recipe."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence

from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.engine import api_connection
from app.db.guard import check_database_is_ours
from app.db.migrations import VERSIONS_DIR, Revisions, alembic_config, database_revisions
from app.db.provision import prepare_api_database
from app.db.reset import drop_api_tables
from app.db.scratch import scratch_database
from app.db.server import embedded_bin_dir, stop_embedded
from app.errors import SetupError
from app.services.seeder import RoleSeeder
from app.settings import Settings, get_settings

Handler = Callable[[argparse.Namespace, Settings], int]


def _show_migration_steps() -> None:
    # Alembic's "Running upgrade a -> b" lines are the progress a person wants; the rest is noise.
    logger = logging.getLogger("alembic.runtime.migration")
    if logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("  %(message)s"))
    handler.addFilter(lambda record: record.getMessage().startswith("Running "))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _config(settings: Settings) -> Config:
    return alembic_config(settings, configure_logging=False)


def _print_current(settings: Settings) -> None:
    revisions = Revisions(_config(settings))

    async def read() -> frozenset[str]:
        async with api_connection(settings) as connection:
            await connection.run_sync(check_database_is_ours, revisions.known)
            return await connection.run_sync(database_revisions)

    current = asyncio.run(read())
    if not current:
        state = "no migration applied; run `just migrate`"
    elif current == revisions.heads:
        state = f"{', '.join(sorted(current))} (head)"
    else:
        state = f"{', '.join(sorted(current))}, behind head {', '.join(sorted(revisions.heads))}; run `just migrate`"
    print(f"API database '{settings.api_db_name}': {state}")


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    _show_migration_steps()
    command.upgrade(_config(settings), args.revision)
    _print_current(settings)
    return 0


def cmd_downgrade(args: argparse.Namespace, settings: Settings) -> int:
    _show_migration_steps()
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
    message = (args.message or "").strip()
    if not message and sys.stdin.isatty():
        message = input("Migration message (e.g. 'Add phone_number to users table'): ").strip()
    if not message:
        raise SetupError('a revision needs a message: just revision "Add phone_number to users table"')
    config = _config(settings)
    if args.version_path:
        # Tests write into a folder of their own, beside the project's revisions.
        config.set_main_option("version_locations", os.pathsep.join([str(VERSIONS_DIR), args.version_path]))
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
        answer = input(f"Drop the API's tables (users, roles, user_roles, alembic_version) from '{name}'? [y/N] ")
        if answer.strip().lower() not in {"y", "yes"}:
            print("Nothing dropped.")
            return 1
    known = Revisions(_config(settings)).known

    async def reset() -> list[str]:
        async with api_connection(settings) as connection:
            return await connection.run_sync(drop_api_tables, known)

    dropped = asyncio.run(reset())
    print(f"Dropped from '{name}': {', '.join(dropped) or 'nothing (no API tables)'}. Run `just init` to rebuild.")
    return 0


def cmd_sql(args: argparse.Namespace, settings: Settings) -> int:
    command.upgrade(_config(settings), args.revision, sql=True)
    return 0


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app", description="bikerental-api database and service")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Handler, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(handler=handler)
        return p

    add("init", cmd_init, "migrate to head, then seed the default roles")
    add("migrate", cmd_migrate, "apply pending migrations").add_argument("revision", nargs="?", default="head")
    p = add("revision", cmd_revision, "write a new migration, autogenerated from the models")
    p.add_argument("message", nargs="?")
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
    add("check", cmd_check, "fail when the models and the migrations disagree")
    add("psql", cmd_psql, "open psql on the API database").add_argument("psql_args", nargs=argparse.REMAINDER)
    add("db-stop", cmd_db_stop, "stop the embedded PostgreSQL")
    return parser


def main(argv: Sequence[str] | None = None, *, settings: Settings | None = None) -> int:
    args = build_parser().parse_args(argv)
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
