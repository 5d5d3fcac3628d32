"""Data commands: init, seed, reset, backup, restore, create-admin."""

from __future__ import annotations

import argparse
import getpass
import os
import sys

import sqlalchemy as sa
from sqlmodel.ext.asyncio.session import AsyncSession

from app.cli.context import CommandContext
from app.cli.schema import backup_first, migrate, print_current
from app.db.engine import api_connection
from app.errors import SetupError
from app.kit.passwords import password_hasher
from app.migrations.backup import backup_now
from app.migrations.lock import run_locked
from app.migrations.reset import api_owned_tables, drop_api_tables
from app.migrations.restore import choose_archive, read_archive, restore_archive
from app.services.first_admin import create_admin, validated_account
from app.services.seeder import RoleSeeder
from app.settings import Settings


def confirmed(question: str, what: str, how_to_skip: str) -> bool:
    """Ask a yes/no question; with no terminal to ask on, refuse with a message saying how to skip the question."""
    if not sys.stdin.isatty():
        raise SetupError(f"{what} and needs confirmation: {how_to_skip}")
    return input(f"{question} [y/N] ").strip().lower() in {"y", "yes"}


def cmd_seed(args: argparse.Namespace, ctx: CommandContext) -> int:
    seeder = RoleSeeder(ctx.revisions, ctx.settings.api_db_schema)

    async def seed() -> str:
        async with api_connection(ctx.settings) as connection:
            return (await seeder.run(AsyncSession(bind=connection))).summary()

    print(ctx.run(seed()))
    return 0


def cmd_init(args: argparse.Namespace, ctx: CommandContext) -> int:
    migrate(ctx, "head")
    return cmd_seed(args, ctx)


def cmd_reset(args: argparse.Namespace, ctx: CommandContext) -> int:
    settings = ctx.settings
    name = settings.api_db_name
    question = f"Drop the API's tables ({', '.join(api_owned_tables())}) from '{name}'?"
    if not args.yes and not confirmed(question, "reset drops the API's tables", "run `just reset --yes`"):
        print("Nothing dropped.")
        return 1

    def reset(connection: sa.Connection) -> list[str]:
        backup_first(connection, ctx, "resetting")
        return drop_api_tables(connection, ctx.revisions.known, settings)

    dropped = ctx.run(run_locked(settings, "reset", reset))
    print(f"Dropped from '{name}': {', '.join(dropped) or 'nothing (no API tables)'}. Run `just init` to rebuild.")
    return 0


def cmd_backup(args: argparse.Namespace, ctx: CommandContext) -> int:
    settings = ctx.settings
    path = ctx.run(
        run_locked(settings, "backup", lambda connection: backup_now(connection, settings, ctx.revisions.known))
    )
    print(f"Backed up '{settings.api_db_name}' to {os.path.relpath(path)}.")
    return 0


def cmd_restore(args: argparse.Namespace, ctx: CommandContext) -> int:
    settings = ctx.settings
    name = settings.api_db_name
    archive = read_archive(choose_archive(settings, args.file), settings)
    shown = os.path.relpath(archive.path)
    question = f"Replace the API's tables in '{name}' with {shown} (taken {archive.created})?"
    if not args.yes and not confirmed(question, f"restore replaces the API's tables in '{name}'", "add --yes"):
        print("Nothing restored.")
        return 1

    def restore(connection: sa.Connection) -> None:
        backup_first(connection, ctx, "restoring", spare=archive.path)
        restore_archive(connection, settings, archive, ctx.revisions.known)

    ctx.run(run_locked(settings, "restore", restore))
    print(f"Restored '{name}' from {shown}.")
    print_current(ctx)
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


def cmd_create_admin(args: argparse.Namespace, ctx: CommandContext) -> int:
    settings = ctx.settings
    account = validated_account(args.username, args.email, _admin_password(settings))

    async def create() -> str:
        async with api_connection(settings) as connection:
            session = AsyncSession(bind=connection)
            report = await create_admin(
                session, ctx.revisions, password_hasher(settings), account, settings.api_db_schema
            )
            return report.summary()

    print(ctx.run(create()))
    return 0
