"""Server commands: serve, psql, db-stop, mlflow."""

from __future__ import annotations

import argparse
import os

from app.cli.context import CommandContext
from app.cli.mlflow import run_mlflow_server
from app.db.pg_tools import pg_env, pg_tool
from app.db.provision import ensure_database
from app.db.server import direct_address, stop_embedded


def cmd_psql(args: argparse.Namespace, ctx: CommandContext) -> int:
    settings = ctx.settings
    # The server itself: PgBouncer refuses psql's search_path option, and would not keep a session's SETs.
    ctx.run(ensure_database(direct_address(settings), settings.api_db_name))
    psql = pg_tool("psql")
    os.execve(psql, [psql, *args.psql_args], pg_env(settings))


def cmd_db_stop(args: argparse.Namespace, ctx: CommandContext) -> int:
    settings = ctx.settings
    if not settings.embedded:
        print(f"API_DB_HOST is set ({settings.api_db_host}): that server is not this project's to stop.")
        return 0
    stopped = stop_embedded(settings.embedded_db_dir)
    print("Embedded PostgreSQL stopped." if stopped else "Embedded PostgreSQL was not running.")
    return 0


def cmd_serve(args: argparse.Namespace, ctx: CommandContext) -> int:
    from app.cli.serve import serve  # the web stack loads only for this command

    serve(ctx.settings, args.workers)
    return 0


def cmd_mlflow(args: argparse.Namespace, ctx: CommandContext) -> int:
    return run_mlflow_server(ctx.settings, host=args.host, port=args.port, workers=args.workers)
