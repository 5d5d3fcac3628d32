"""Revision files of later releases, written by the tests that need them: a column added, a column dropped, ..."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from tests.support.databases import HEAD

_FILE = '''"""{message}"""

import sqlalchemy as sa
from alembic import op

from app.migrations.backfill import backfill

revision = "{revision}"
down_revision = {parent!r}
{phase}

def upgrade() -> None:
{upgrade}


def downgrade() -> None:
{downgrade}
'''


def revision_file(
    revision: str, parent: str, upgrade: str, *, downgrade: str = "pass", message: str = "", phase: str | None = None
) -> str:
    """A revision's file; `upgrade` and `downgrade` are the functions' bodies (without their indent)."""
    return _FILE.format(
        message=message or f"Revision {revision}",
        revision=revision,
        parent=parent,
        phase=f'phase = "{phase}"\n' if phase else "",
        upgrade=textwrap.indent(textwrap.dedent(upgrade), "    "),
        downgrade=textwrap.indent(textwrap.dedent(downgrade), "    "),
    )


# The next release adds a column (expand); the one after stops using phone_number and drops it (contract).
ADD_NICKNAME = revision_file(
    "0900",
    HEAD,
    'op.add_column("users", sa.Column("nickname", sa.String(60), nullable=True))',
    downgrade='op.drop_column("users", "nickname")',
    message="Add nickname",
    phase="expand",
)
DROP_PHONE = revision_file(
    "0901",
    "0900",
    'op.drop_column("users", "phone_number")  # squawk-ignore: ban-drop-column (unused since the release before)',
    downgrade='op.add_column("users", sa.Column("phone_number", sa.String(20), nullable=True))',
    message="Drop phone_number",
    phase="contract",
)


def write_revisions(folder: Path, *files: str) -> None:
    """Put revision files into a versions folder, each named by its revision."""
    for text in files:
        found = re.search(r'^revision = "(\w+)"$', text, re.MULTILINE)
        assert found, text
        (folder / f"{found[1]}_next.py").write_text(text)
