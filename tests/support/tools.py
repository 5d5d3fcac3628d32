"""Outside tools some tests need (Debian packages .ci/run installs): missing in CI is a failure, elsewhere a skip."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from typing import NoReturn


def missing(what: str, how: str) -> NoReturn:
    """Fail in CI, where .ci/run provides `what`; skip on a developer's machine, saying `how` to get it."""
    import pytest

    if os.environ.get("CI"):
        raise AssertionError(f"{what}: .ci/run provides it ({how})")
    pytest.skip(f"{what} ({how})")


def debian_tool(name: str, package: str | None = None) -> str:
    """The path of `name` (also looked for in /usr/sbin, which may not be on PATH)."""
    found = shutil.which(name) or (str(Path("/usr/sbin") / name) if (Path("/usr/sbin") / name).is_file() else None)
    if found is None:
        missing(f"{name} is not installed", f"apt-get install {package or name}")
    return found


def shared_redis() -> str:
    """The Redis on 127.0.0.1:6379 that instances share; its URL (a database of the tests' own)."""
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            answers = sock.recv(16).startswith(b"+PONG")
    except OSError:
        answers = False
    if not answers:
        missing("Redis does not answer on 127.0.0.1:6379", "apt-get install redis-server")
    return "redis://127.0.0.1:6379/7"
