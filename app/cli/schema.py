"""Schema commands: migrate, downgrade, current, history, revision, sql, check, lint-migrations."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config

from app.db.backup import backup_before_change
from app.db.checksums import verify_checksums
from app.db.engine import api_connection
from app.db.guard import check_database_is_ours
from app.db.lint import MigrationLintError, lint_migrations
from app.db.migrations import VERSIONS_DIR, Revisions, alembic_config, database_revisions, show_migration_steps
from app.db.scratch import scratch_database
from app.errors import SetupError
from app.settings import Settings


def cli_config(settings: Settings) -> Config:
    return alembic_config(settings, configure_logging=False)


def print_current(settings: Settings) -> None:
    revisions = Revisions(cli_config(settings))

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


def backup_first(
    settings: Settings, action: str, *, unless_at: frozenset[str] | None = None, spare: Path | None = None
) -> None:
    """A pg_dump before a command changes a database that holds rows (AUTO_BACKUP=false: never)."""
    known = Revisions(cli_config(settings)).known
    path = backup_before_change(settings, known, action, unless_at=unless_at, spare=spare)
    if path is not None:
        print(f"Backed up '{settings.api_db_name}' to {os.path.relpath(path)} before {action}.")


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    show_migration_steps()
    heads = Revisions(cli_config(settings)).heads if args.revision in {"head", "heads"} else None
    backup_first(settings, "migrating", unless_at=heads)
    command.upgrade(cli_config(settings), args.revision)
    print_current(settings)
    return 0


def cmd_downgrade(args: argparse.Namespace, settings: Settings) -> int:
    show_migration_steps()
    backup_first(settings, "downgrading")
    command.downgrade(cli_config(settings), args.revision)
    print_current(settings)
    return 0


def cmd_current(args: argparse.Namespace, settings: Settings) -> int:
    print_current(settings)
    return 0


def cmd_history(args: argparse.Namespace, settings: Settings) -> int:
    command.history(cli_config(settings))
    return 0


def cmd_revision(args: argparse.Namespace, settings: Settings) -> int:
    message = " ".join(args.message).strip()
    if not message and sys.stdin.isatty():
        message = input("Migration message (e.g. 'Add phone_number to users table'): ").strip()
    if not message:
        raise SetupError('a revision needs a message: just revision "Add phone_number to users table"')
    config = cli_config(settings)
    if args.version_path:
        # Tests write into a folder of their own, beside the project's revisions.
        config.set_main_option("version_locations", os.pathsep.join([str(VERSIONS_DIR), args.version_path]))
    Revisions(config).require_one_head()
    scripts = command.revision(config, message=message, autogenerate=not args.empty, version_path=args.version_path)
    for script in scripts if isinstance(scripts, list) else [scripts]:
        if script is not None:
            print(f"Wrote {os.path.relpath(script.path)}: review it, then run `just migrate`.")
    return 0


def cmd_sql(args: argparse.Namespace, settings: Settings) -> int:
    command.upgrade(cli_config(settings), args.revision, sql=True)
    return 0


def cmd_lint_migrations(args: argparse.Namespace, settings: Settings) -> int:
    revisions, findings = lint_migrations(cli_config(settings))
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
    revisions = Revisions(cli_config(settings))

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
        config = cli_config(scratch)
        command.upgrade(config, "head")
        command.check(config)
    print("Models and migrations agree.")
    return 0
