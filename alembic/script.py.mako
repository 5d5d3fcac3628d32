"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from collections.abc import Sequence

<%
    # Only the imports the body uses, so a revision passes `ruff check` as written (an empty one included).
    body = (upgrades or "") + (downgrades or "")
%>\
% if "sa." in body:
import sqlalchemy as sa
% endif
% if "sqlmodel." in body:
import sqlmodel.sql.sqltypes
% endif
% if "op." in body:
from alembic import op
% endif
${imports if imports else ""}
revision: str = ${repr(up_revision)}
down_revision: str | Sequence[str] | None = ${repr(down_revision)}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}
# expand: the previous release's code survives it, so it runs before the new code (new tables, nullable columns,
# indexes). contract: drops, renames, type changes, NOT NULL, new constraints; it runs once no older release is left.
phase = ${repr(config.attributes.get("revision_phase", "expand"))}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
