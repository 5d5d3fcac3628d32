"""Index role holders by role, then user, for keyset pages

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 13:30:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Concurrently, outside the transaction: user_roles stays writable while the index builds on a big table.
    with op.get_context().autocommit_block():
        # A build of it that stopped before left it INVALID, which `if_not_exists` would keep: start afresh.
        op.drop_index("ix_user_roles_role_id_user_id", "user_roles", postgresql_concurrently=True, if_exists=True)
        op.create_index(
            "ix_user_roles_role_id_user_id",
            "user_roles",
            ["role_id", "user_id"],
            postgresql_concurrently=True,
            if_not_exists=True,
        )
        # Its first column does the old index's job.
        op.drop_index("ix_user_roles_role_id", "user_roles", postgresql_concurrently=True, if_exists=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_user_roles_role_id", "user_roles", ["role_id"], postgresql_concurrently=True, if_not_exists=True
        )
        op.drop_index("ix_user_roles_role_id_user_id", "user_roles", postgresql_concurrently=True, if_exists=True)
