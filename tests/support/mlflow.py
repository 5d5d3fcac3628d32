"""MLflow's own schema, built by MLflow's own migrations, for the tests that prove it is never touched."""

from __future__ import annotations

import os

NO_POOL = "MLFLOW_SQLALCHEMYSTORE_POOLCLASS"


def mlflow_db_upgrade(url: str) -> None:
    """`mlflow db upgrade URL`, in this process: the tests import MLflow anyway, and a second import costs seconds."""
    from mlflow.db import upgrade  # only the tests that use MLflow pay for importing it

    # No pooled connection stays behind: the template is cloned right after, which needs it unused.
    before = os.environ.get(NO_POOL)
    os.environ[NO_POOL] = "NullPool"
    try:
        assert upgrade.callback is not None
        upgrade.callback(url)
    finally:
        if before is None:
            del os.environ[NO_POOL]
        else:
            os.environ[NO_POOL] = before
