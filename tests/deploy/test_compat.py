"""`just check-compat`: the previous release, driven on this checkout's expand revisions, catches a change that
breaks it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.databases import HEAD, Databases
from tests.support.releases import Releases
from tests.support.revisions import revision_file

pytestmark = pytest.mark.slow  # a previous release's service, started twice, in a worktree

# A rename in one step, written as an expand revision: the lint flags it, and so must the release it breaks.
RENAME = revision_file(
    "0900",
    HEAD,
    'op.alter_column("users", "full_name", new_column_name="display_name")',
    downgrade='op.alter_column("users", "display_name", new_column_name="full_name")',
    message="Rename full_name to display_name",
)


def test_check_compat_fails_on_a_rename_done_in_one_step(pg: Databases, tmp_path: Path) -> None:
    releases = Releases(tmp_path)
    releases.commit("Rename full_name in one step", {"alembic/versions/0900_rename.py": RENAME})
    env = {**pg.env(pg.new_name("compat")), "PYTHONPATH": str(releases.repo)}
    result = subprocess.run(
        [sys.executable, "-m", "app", "check-compat"],
        cwd=releases.repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"Previous release: {releases.n[:7]} release N" in result.stdout
    assert "this checkout's expand revision 0900 applied under it" in result.stdout
    said = result.stderr
    assert "error: the previous release" in said
    assert "fails on this checkout's expand revision 0900: a sign-up answered 500, not 201" in said
    assert "Traceback" not in said + result.stdout
