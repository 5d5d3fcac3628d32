"""PostgreSQL's client tools (pg_dump, pg_restore, psql), the environment that points them at the API database, and
what they say when they fail."""

from __future__ import annotations

import os
import warnings

from app.db.server import direct_address, embedded_bin_dir
from app.settings import Settings


def pg_tool(name: str) -> str:
    """pg_dump, pg_restore or psql from the embedded server's wheel: newer than any server they talk to."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs' XDG_RUNTIME_DIR warning, on importing the wheel
        return str(embedded_bin_dir() / name)


def pg_env(settings: Settings) -> dict[str, str]:
    """The environment of a libpq tool on the API database, on the server itself (never through PgBouncer); the
    password stays out of argv and messages."""
    return {**os.environ, **direct_address(settings).libpq_env(settings.api_db_name, settings.api_db_schema)}


def first_error(stderr: bytes, returncode: int) -> str:
    """The line of a tool's stderr that says what went wrong."""
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line or "error:" in line]
    return (errors or lines or [f"exit status {returncode}"])[0]
