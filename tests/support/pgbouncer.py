"""A real PgBouncer (Debian's 1.18) in transaction mode in front of the test server, for the tests that need one."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.databases import Databases
from tests.support.live_server import free_port
from tests.support.tools import debian_tool


@dataclass(frozen=True)
class Bouncer:
    """A PgBouncer on 127.0.0.1:`port`, in transaction mode, in front of the test server."""

    port: int
    log: Path


def _run_as(server_host: str) -> str | None:
    """PgBouncer refuses to run as root: run it as the owner of the server's socket folder (who may enter it)."""
    if os.geteuid() != 0:
        return None
    owner = pwd.getpwuid(os.stat(server_host).st_uid).pw_name if server_host.startswith("/") else "root"
    return owner if owner != "root" else "nobody"


def start_pgbouncer(pg: Databases) -> Iterator[Bouncer]:
    """Run a PgBouncer in front of the test server until the generator is closed."""
    pgbouncer = debian_tool("pgbouncer")
    server = pg.address
    folder = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
    port = free_port()
    password = f" password={server.password}" if server.password else ""
    # Two server connections for every client: the service's pooled connections take turns on them, as in
    # production, so a statement prepared on one is looked for on the other.
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={server.host} port={server.port} user={server.user}{password}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {folder / 'users.txt'}\n"
        "pool_mode = transaction\ndefault_pool_size = 2\nmax_client_conn = 200\n"
        + (f"user = {user}\n" if (user := _run_as(server.host)) else "")
    )
    (folder / "users.txt").write_text(f'"{server.user}" ""\n')
    if user:
        for path in (folder, *folder.iterdir()):
            shutil.chown(path, user)
    log = folder / "pgbouncer.log"
    with log.open("wb") as output:
        process = subprocess.Popen([pgbouncer, str(folder / "pgbouncer.ini")], stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, f"pgbouncer exited: {log.read_text()}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"pgbouncer did not listen on {port}: {log.read_text()}"
                time.sleep(0.02)
        yield Bouncer(port, log)
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def through(bouncer: Bouncer, pg: Databases, *, direct: bool = True) -> dict[str, Any]:
    """Settings that put the service behind `bouncer` and, when `direct`, schema work on the server itself."""
    values: dict[str, Any] = {
        "api_db_host": "127.0.0.1",
        "api_db_port": bouncer.port,
        "api_db_user": pg.address.user,
        "api_db_password": pg.address.password or "",
        "api_db_pgbouncer": True,
    }
    if direct:
        values |= {"migration_db_host": pg.address.host, "migration_db_port": pg.address.port}
    return values
