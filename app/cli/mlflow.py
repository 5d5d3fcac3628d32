"""`just mlflow`: an MLflow tracking server on the API's PostgreSQL, in MLflow's own database (POSTGRES_DB)."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from app.cli.processes import answers_200, port_taken, stop_group
from app.db.provision import ensure_database
from app.db.server import ServerAddress
from app.errors import SetupError
from app.mlflow.store import backend_store_uri, mlflow_address
from app.settings import PROJECT_ROOT, Settings

# Beside the embedded server's data, git-ignored; MLflow's default (./mlartifacts) would land in the project root.
ARTIFACTS_DIR = PROJECT_ROOT / ".data" / "mlartifacts"
# The first start on an empty database runs MLflow's own migrations: about 30 s here, longer on a busy machine.
STARTUP_TIMEOUT = 180.0
STOP_TIMEOUT = 15.0


def server_command(uri: str, host: str, port: int, workers: int, artifacts: Path) -> list[str]:
    """The `mlflow server` command line, run by this interpreter (the venv that has the `mlflow` extra)."""
    return [
        *(sys.executable, "-m", "mlflow", "server"),
        *("--backend-store-uri", uri),
        *("--artifacts-destination", str(artifacts)),
        *("--host", host, "--port", str(port), "--workers", str(workers)),
    ]


def _describe(address: ServerAddress) -> str:
    if address.is_socket:
        return f"embedded PostgreSQL (socket in {address.host})"
    return f"PostgreSQL at {address.host}:{address.port} as user '{address.user}'"


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_mlflow_server(settings: Settings, *, host: str, port: int, workers: int) -> int:
    """Create MLflow's database when missing, run the server until it exits or is stopped; its exit code."""
    if importlib.util.find_spec("flask") is None or importlib.util.find_spec("mlflow.server") is None:
        raise SetupError(
            "the MLflow server is not installed in this environment: "
            "run `just mlflow` (or `uv run --extra mlflow python -m app mlflow`)"
        )
    address = mlflow_address(settings)
    database = settings.postgres_db
    created = asyncio.run(ensure_database(address, database))
    print(f"MLflow database '{database}' on {_describe(address)}: {'created' if created else 'found'}.", flush=True)

    shown_host = "127.0.0.1" if host in {"0.0.0.0", "::", ""} else host  # noqa: S104 (comparing, not binding)
    base_url = f"http://{shown_host}:{port}"
    # Checked first: another server answering /health there would pass for ours.
    if port_taken(host, port):
        raise SetupError(
            f"port {port} is taken (another MLflow server?); stop it or run `just mlflow --port {port + 1}`"
        )
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if address.password:
        env["PGPASSWORD"] = address.password
    print(f"Starting the MLflow tracking server on {base_url} (a new database first gets MLflow's migrations)...")
    sys.stdout.flush()
    started = time.monotonic()
    # A session of its own, so one signal stops MLflow, uvicorn and its workers together (see stop_group).
    process = subprocess.Popen(
        server_command(backend_store_uri(address, database), host, port, workers, ARTIFACTS_DIR),
        env=env,
        start_new_session=True,
    )
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        while not answers_200(f"{base_url}/health"):
            if process.poll() is not None:
                raise SetupError(
                    f"the MLflow server exited with code {process.returncode} before it was ready; "
                    "its output above says why"
                )
            if time.monotonic() - started > STARTUP_TIMEOUT:
                raise SetupError(f"the MLflow server was not ready after {STARTUP_TIMEOUT:.0f} s; stopped it")
            time.sleep(0.5)
        print(f"MLflow tracking server ready on {base_url} after {time.monotonic() - started:.1f} s; Ctrl-C stops it.")
        sys.stdout.flush()
        return process.wait()
    except KeyboardInterrupt:
        print("Stopping the MLflow tracking server...", flush=True)
        return 0
    finally:
        # uv and just pass their own SIGINT or SIGTERM on: a second signal must not cut the shutdown short.
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_group(process, STOP_TIMEOUT)
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous)
