"""Processes the commands start and stop: a server in a session of its own, a port, an answer over HTTP."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request


def answers_200(url: str) -> bool:
    """True when GET `url` answers 200 within two seconds."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (a URL we built: http on our host)
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def group_alive(pgid: int) -> bool:
    """True while a process of group `pgid` runs."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def port_taken(host: str, port: int) -> bool:
    """True when something listens on `host`:`port`."""
    # Binding, not connecting: it sends nothing anywhere, and fails the same way the server's own bind would.
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def stop_group(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM to the process's group (it was started in a session of its own), SIGKILL after `timeout` seconds."""
    # A server may run children of its own (MLflow: uvicorn, its workers, a job runner): signal the whole group, and
    # wait for all of them, so nothing is left holding the port or connections to the database.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    give_up = time.monotonic() + timeout
    while group_alive(process.pid) and time.monotonic() < give_up:
        process.poll()  # reaps the server's own process; init reaps its orphaned children
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
