"""The project's environment survives the order a newcomer runs its commands in."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from app.settings import PROJECT_ROOT

pytestmark = pytest.mark.slow  # `uv sync` in a copy of the project

# Every file each installed distribution recorded is on disk: two distributions that shared files (mlflow and
# mlflow-skinny did) break each other when one of them is removed. Importing mlflow proves the same, in 9 s.
WHOLE = """
from importlib.metadata import distributions
broken = sorted({d.metadata["Name"] for d in distributions() for f in d.files or [] if not f.locate().exists()})
assert not broken, f"files missing from {broken}"
import importlib.util
assert importlib.util.find_spec("mlflow") is not None
"""


@pytest.fixture
def fresh_clone(tmp_path: Path) -> Path:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(PROJECT_ROOT), str(clone)], check=True)
    return clone


@pytest.mark.parametrize(
    "order",
    [["sync", "mlflow", "sync"], ["mlflow", "sync", "mlflow"]],
    ids=["sync-first", "mlflow-first"],
)
def test_uv_sync_and_just_mlflow_in_any_order_keep_the_environment_whole(fresh_clone: Path, order: list[str]) -> None:
    uv = shutil.which("uv")
    assert uv is not None, "uv is not on PATH"
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "UV_FROZEN"}}
    # `just mlflow` is `uv run --extra mlflow ...`: what it does to the environment is that extra's sync.
    commands = {"sync": [uv, "sync", "--quiet"], "mlflow": [uv, "run", "--quiet", "--extra", "mlflow", "true"]}
    for step in order:
        result = subprocess.run(commands[step], cwd=fresh_clone, env=env, capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"{step}: {result.stderr}"
        python = fresh_clone / ".venv" / "bin" / "python"
        whole = subprocess.run([str(python), "-c", WHOLE], capture_output=True, text=True, check=False)
        assert whole.returncode == 0, f"after {step}: {whole.stderr}"
