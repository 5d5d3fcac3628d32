"""Data commands: init, seed, reset, backup, restore, create-admin."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys

from sqlalchemy.ext.asyncio import AsyncSession

from app.cli.schema import backup_first, cli_config, cmd_migrate, print_current
from app.db.backup import backup_now
from app.db.engine import api_connection, single_connection
from app.db.migrations import Revisions
from app.db.reset import drop_api_tables
from app.db.restore import choose_archive, read_archive, restore_archive
from app.errors import SetupError
from app.services.admins import create_admin, validated_account
from app.services.passwords import password_hasher
from app.services.seeder import RoleSeeder
from app.settings import Settings


def confirmed(question: str, what: str, how_to_skip: str) -> bool:
    """Ask a yes/no question; with no terminal to ask on, refuse with a message saying how to skip the question."""
    if not sys.stdin.isatty():
        raise SetupError(f"{what} and needs confirmation: {how_to_skip}")
    return input(f"{question} [y/N] ").strip().lower() in {"y", "yes"}


def cmd_seed(args: argparse.Namespace, settings: Settings) -> int:
    seeder = RoleSeeder(Revisions(cli_config(settings)), settings.api_db_schema)

    async def seed() -> str:
        async with api_connection(settings) as connection:
            return (await seeder.run(AsyncSession(bind=connection))).summary()

    print(asyncio.run(seed()))
    return 0


def cmd_init(args: argparse.Namespace, settings: Settings) -> int:
    cmd_migrate(argparse.Namespace(revision="head"), settings)
    return cmd_seed(args, settings)


def cmd_reset(args: argparse.Namespace, settings: Settings) -> int:
    name = settings.api_db_name
    question = f"Drop the API's tables (users, roles, user_roles and Alembic's) from '{name}'?"
    if not args.yes and not confirmed(question, "reset drops the API's tables", "run `just reset --yes`"):
        print("Nothing dropped.")
        return 1
    backup_first(settings, "resetting")
    known = Revisions(cli_config(settings)).known

    async def reset() -> list[str]:
        async with single_connection(settings) as connection:
            return await connection.run_sync(drop_api_tables, known, settings)

    dropped = asyncio.run(reset())
    print(f"Dropped from '{name}': {', '.join(dropped) or 'nothing (no API tables)'}. Run `just init` to rebuild.")
    return 0


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    path = backup_now(settings, Revisions(cli_config(settings)).known)
    print(f"Backed up '{settings.api_db_name}' to {os.path.relpath(path)}.")
    return 0


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    name = settings.api_db_name
    archive = read_archive(choose_archive(settings, args.file), settings)
    shown = os.path.relpath(archive.path)
    question = f"Replace the API's tables in '{name}' with {shown} (taken {archive.created})?"
    if not args.yes and not confirmed(question, f"restore replaces the API's tables in '{name}'", "add --yes"):
        print("Nothing restored.")
        return 1
    backup_first(settings, "restoring", spare=archive.path)
    restore_archive(settings, archive, Revisions(cli_config(settings)).known)
    print(f"Restored '{name}' from {shown}.")
    print_current(settings)
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
    revisions = Revisions(cli_config(settings))

    async def create() -> str:
        async with api_connection(settings) as connection:
            report = await create_admin(
                AsyncSession(bind=connection), revisions, password_hasher(settings), account, settings.api_db_schema
            )
            return report.summary()

    print(asyncio.run(create()))
    return 0
