"""compose.yaml: the guide's architecture, checked without a Docker engine; its init script runs on real PostgreSQL."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

from app.db.server import embedded_bin_dir
from app.settings import PROJECT_ROOT, Settings
from tests.support.databases import Databases
from tests.support.tools import debian_tool

pytestmark = pytest.mark.slow  # compose's images and scripts

COMPOSE_FILE = PROJECT_ROOT / "compose.yaml"
DOCKERFILE = PROJECT_ROOT / "deploy" / "Dockerfile"
EVERY_INTERFACE = "0.0.0.0"  # noqa: S104 (what a container must listen on; compared here, never bound)
# Variables of compose's own, not the service's settings: how many API instances run behind the balancer.
COMPOSE_ONLY = {"API_REPLICAS": "3"}
INTERPOLATION = re.compile(r"(?<!\$)\$\{(\w+)(?::-([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


def service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"][name]
    return found


@functools.cache
def stages() -> dict[str, list[str]]:
    """deploy/Dockerfile's stages by name: each one's instructions, its FROM first."""
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text()).splitlines():
        if line.startswith("FROM "):
            current = found.setdefault(line.split(" AS ")[-1].strip(), [])
        if line.strip() and not line.startswith("#"):
            current.append(line.strip())
    return found


def built_from(spec: dict[str, Any], target: str) -> bool:
    return bool(spec["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile", "target": target})


def waits_for_healthy_db(spec: dict[str, Any]) -> bool:
    return bool(spec["depends_on"]["mlflow-db"]["condition"] == "service_healthy")


def embedded_major() -> int:
    version = subprocess.run([embedded_bin_dir() / "postgres", "--version"], capture_output=True, text=True, check=True)
    found = re.search(r"(\d+)\.\d+", version.stdout)
    assert found, version.stdout
    return int(found.group(1))


def test_database_is_postgres_of_the_embedded_servers_major_version(compose: dict[str, Any]) -> None:
    db = service(compose, "mlflow-db")
    image, tag = db["image"].split(":")
    assert image == "postgres"
    assert int(tag.split(".")[0]) == embedded_major()
    assert db["ports"] == ["5433:5432"]
    # A named volume where PostgreSQL 18's image keeps its data (it refuses one at .../data).
    (volume,) = db["volumes"]
    name, target = volume.split(":")
    assert name in compose["volumes"]
    assert target == "/var/lib/postgresql"
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])


def test_every_variable_defaults_to_the_settings_default_and_is_documented(compose: dict[str, Any]) -> None:
    defaults = Settings.model_validate({})
    example = (PROJECT_ROOT / ".env.example").read_text()
    found = INTERPOLATION.findall(COMPOSE_FILE.read_text())
    assert {name for name, _ in found} >= {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "API_DB_NAME"}
    for name, default in found:
        if name in COMPOSE_ONLY:
            assert default == COMPOSE_ONLY[name]
            assert re.search(rf"^# {name}={re.escape(default)}$", example, re.MULTILINE), (
                f"{name} is not in .env.example"
            )
            continue
        expected = getattr(defaults, name.lower())
        assert default == (expected.get_secret_value() if hasattr(expected, "get_secret_value") else str(expected))
        assert re.search(rf"^{name}={re.escape(default)}$", example, re.MULTILINE), f"{name} is not in .env.example"


def test_database_service_gets_the_names_its_init_script_uses(compose: dict[str, Any]) -> None:
    env = service(compose, "mlflow-db")["environment"]
    for name in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "API_DB_NAME", "API_DB_USER", "API_DB_PASSWORD"):
        assert env[name].startswith(f"${{{name}:-"), name
    (config,) = service(compose, "mlflow-db")["configs"]
    assert config["source"] in compose["configs"]
    assert config["target"].startswith("/docker-entrypoint-initdb.d/")
    assert config["target"].endswith(".sh")


def test_mlflow_server_uses_the_mlflow_database_once_it_is_healthy(compose: dict[str, Any]) -> None:
    mlflow = service(compose, "mlflow")
    command = mlflow["command"]
    assert command[:2] == ["mlflow", "server"]
    uri = command[command.index("--backend-store-uri") + 1]
    assert uri == "postgresql+psycopg://${POSTGRES_USER:-mlflow}@mlflow-db:5432/${POSTGRES_DB:-mlflow}"
    assert mlflow["environment"]["PGPASSWORD"] == "${POSTGRES_PASSWORD:-mlflow}"
    assert command[command.index("--host") + 1] == EVERY_INTERFACE
    assert command[command.index("--port") + 1] == "5000"
    assert mlflow["ports"] == ["5000:5000"]
    assert waits_for_healthy_db(mlflow)
    assert "/health" in " ".join(mlflow["healthcheck"]["test"])


def test_mlflow_image_is_the_version_in_the_lock_file(compose: dict[str, Any]) -> None:
    lock = tomllib.loads((PROJECT_ROOT / "uv.lock").read_text())
    locked = {package["name"]: package["version"] for package in lock["package"]}
    assert built_from(service(compose, "mlflow"), "mlflow-server")
    assert stages()["mlflow-server"][0] == "FROM ghcr.io/mlflow/mlflow:v${MLFLOW_VERSION} AS mlflow-server"
    dockerfile = DOCKERFILE.read_text()
    assert f"ARG MLFLOW_VERSION={locked['mlflow']}" in dockerfile
    assert f"ARG PSYCOPG_VERSION={locked['psycopg']}" in dockerfile


def test_mlflows_schema_is_upgraded_guarded_before_its_server_starts(compose: dict[str, Any]) -> None:
    upgrade = service(compose, "mlflow-upgrade")
    assert built_from(upgrade, "tools")  # the `mlflow` extra, which the API's image leaves out
    assert upgrade["command"] == ["/srv/.venv/bin/python", "-m", "app", "mlflow-upgrade", "apply", "--yes"]
    assert upgrade["restart"] == "no"
    assert waits_for_healthy_db(upgrade)
    assert upgrade["volumes"] == ["api-backups:/srv/backups"]  # its backup, kept
    env = upgrade["environment"]
    assert (env["API_DB_HOST"], env["API_DB_PORT"]) == ("mlflow-db", "5432")  # the server itself: a session lock
    for name in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"):
        assert env[name] == f"${{{name}:-mlflow}}"
    assert service(compose, "mlflow")["depends_on"]["mlflow-upgrade"] == {"condition": "service_completed_successfully"}
    tools = stages()["tools"]
    assert tools[0] == "FROM runtime AS tools"
    assert any("--extra mlflow" in line for line in stages()["venv-tools"])


def test_migrate_step_runs_once_straight_to_postgresql(compose: dict[str, Any]) -> None:
    migrate = service(compose, "migrate")
    assert migrate["command"] == ["/srv/.venv/bin/python", "-m", "app", "init"]
    assert migrate["restart"] == "no"
    env = migrate["environment"]
    # Not through the pooler: migrations hold a session lock and may build indexes concurrently.
    assert (env["API_DB_HOST"], env["API_DB_PORT"]) == ("mlflow-db", "5432")
    assert env["API_DB_NAME"] == "${API_DB_NAME:-bikerental_api}"
    assert env["POSTGRES_DB"] == "${POSTGRES_DB:-mlflow}"  # so the settings can refuse an API database named like it
    assert migrate["volumes"] == ["api-backups:/srv/backups"]  # BACKUP_DIR's default in the image's /srv
    assert "api-backups" in compose["volumes"]
    assert waits_for_healthy_db(migrate)
    assert built_from(migrate, "api")
    code = stages()["code"]
    copied = {line.split()[1] for line in code if line.startswith("COPY ")}
    bound = set(re.findall(r"source=([\w.]+)", " ".join(stages()["venv"])))
    assert copied | bound == {"pyproject.toml", "uv.lock", "alembic.ini", "alembic", "app"}
    assert all((PROJECT_ROOT / path).exists() for path in copied | bound)
    # Only that goes into the build: not .venv, .data, backups or .env from the host.
    ignore = (PROJECT_ROOT / "deploy" / "Dockerfile.dockerignore").read_text().splitlines()
    wanted = [
        f"!{path}/" if (PROJECT_ROOT / path).is_dir() else f"!{path}"
        for path in ("pyproject.toml", "uv.lock", "alembic.ini", "alembic", "app")
    ]
    assert ignore[ignore.index("*") + 1 :][: len(wanted)] == wanted


def test_instances_start_after_the_migrate_step_and_go_through_pgbouncer(compose: dict[str, Any]) -> None:
    api = service(compose, "api")
    assert api["build"] == service(compose, "migrate")["build"]  # one image for the step and the instances
    assert 'CMD ["/srv/.venv/bin/python", "-m", "app", "serve"]' in stages()["runtime"]
    assert stages()["api"][0] == "FROM runtime AS api"
    assert "command" not in api
    assert api["deploy"]["replicas"] == "${API_REPLICAS:-3}"
    env = api["environment"]
    assert (env["API_DB_HOST"], env["API_DB_PORT"], env["API_DB_PGBOUNCER"]) == ("pgbouncer", "6432", "true")
    assert (env["MIGRATION_DB_HOST"], env["MIGRATION_DB_PORT"]) == ("mlflow-db", "5432")
    assert env["MIGRATE_ON_STARTUP"] == "false"
    assert env["REDIS_URL"] == "redis://redis:6379/0"  # rate limits count across instances
    assert (env["API_HOST"], env["API_PORT"]) == (EVERY_INTERFACE, "8000")
    assert float(env["DRAIN_SECONDS"]) > 0
    # The rest of .env (mail, lockout, ...) reaches the instances; the settings above override its host-side values.
    assert api["env_file"] == [{"path": ".env", "required": False}]
    assert api["depends_on"] == {
        "migrate": {"condition": "service_completed_successfully"},
        "pgbouncer": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }
    assert "ports" not in api  # only the balancer is published
    assert "http://127.0.0.1:8000/health/ready" in " ".join(api["healthcheck"]["test"])


@pytest.mark.parametrize("name", ["migrate", "api", "mlflow-upgrade"])
def test_every_variable_the_api_gets_is_a_setting(compose: dict[str, Any], name: str) -> None:
    fields = {field.upper() for field in Settings.model_fields}
    assert set(service(compose, name)["environment"]) <= fields


def test_pgbouncer_pools_transactions_for_the_api_database(compose: dict[str, Any]) -> None:
    pgbouncer = service(compose, "pgbouncer")
    (config,) = pgbouncer["configs"]
    ini = compose["configs"][config["source"]]["content"]
    assert config["target"] == "/etc/pgbouncer/pgbouncer.ini"
    assert "* = host=mlflow-db port=5432" in ini
    assert re.search(r"^pool_mode = transaction$", ini, re.MULTILINE)
    assert re.search(r"^listen_port = 6432$", ini, re.MULTILINE)
    assert built_from(pgbouncer, "pgbouncer")
    assert stages()["pgbouncer"][0] == "FROM debian:${DEBIAN_RELEASE}-slim AS pgbouncer"  # Debian's, as in the tests
    assert "ARG DEBIAN_RELEASE=bookworm" in DOCKERFILE.read_text()
    assert waits_for_healthy_db(pgbouncer)


def test_the_balancer_sends_traffic_to_ready_instances_only(compose: dict[str, Any], tmp_path: Path) -> None:
    lb = service(compose, "lb")
    assert lb["ports"] == ["127.0.0.1:8000:8000"]  # tokens may be signed with the example secret: this machine only
    assert lb["depends_on"] == {"api": {"condition": "service_healthy"}}
    (config,) = lb["configs"]
    cfg = compose["configs"][config["source"]]["content"]
    assert "option httpchk GET /health/ready" in cfg
    assert "server-template api" in cfg
    haproxy = debian_tool("haproxy")
    (tmp_path / "haproxy.cfg").write_text(cfg)
    checked = subprocess.run([haproxy, "-c", "-f", str(tmp_path / "haproxy.cfg")], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_api_image_and_process_leave_mlflow_out(compose: dict[str, Any]) -> None:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    assert not [r for r in project["dependencies"] if Requirement(r).name.startswith("mlflow")]
    extra = {Requirement(r).name: Requirement(r).extras for r in project["optional-dependencies"]["mlflow"]}
    assert extra == {"mlflow": set(), "psycopg": {"binary"}}
    # The image installs the project's dependencies only: no extras, no dev group.
    (sync,) = [line for line in stages()["venv"] if "uv sync" in line]
    assert sync.endswith("uv sync --locked --no-dev --no-install-project")
    code = "import sys, app.http.app, app.cli; print(sorted(m for m in sys.modules if m.split('.')[0] == 'mlflow'))"
    imported = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert (imported.returncode, imported.stdout) == (0, "[]\n"), imported.stderr


def test_one_image_definition_outside_the_root(compose: dict[str, Any]) -> None:
    assert not (PROJECT_ROOT / "Dockerfile").exists()
    assert not (PROJECT_ROOT / ".dockerignore").exists()
    built = {name: spec["build"] for name, spec in compose["services"].items() if "build" in spec}
    assert set(built) == {"mlflow-upgrade", "mlflow", "migrate", "pgbouncer", "api"}
    assert {spec["dockerfile"] for spec in built.values()} == {"deploy/Dockerfile"}
    assert {spec["target"] for spec in built.values()} <= set(stages())


@pytest.fixture
def api_role(pg: Databases) -> Iterator[tuple[str, str]]:
    """Names for the API's role and database, removed after the test."""
    role, database = pg.new_name("role"), pg.new_name("compose_api")
    yield role, database
    pg.drop(database)
    pg.query("postgres", f"DROP ROLE IF EXISTS {role}")


def init_script(compose: dict[str, Any]) -> str:
    (config,) = service(compose, "mlflow-db")["configs"]
    content: str = compose["configs"][config["source"]]["content"]
    assert not INTERPOLATION.search(content), "the script reads the container's environment, not compose's"
    return content.replace("$$", "$")  # compose's escape for a literal `$`


@pytest.mark.parametrize("own_role", [True, False], ids=["own API role", "API_DB_USER is POSTGRES_USER"])
def test_init_script_creates_the_api_database(
    compose: dict[str, Any], pg: Databases, api_role: tuple[str, str], tmp_path: Path, own_role: bool
) -> None:
    role, database = api_role
    owner = role if own_role else pg.address.user
    script = tmp_path / "10-create-api-database.sh"
    script.write_text(init_script(compose))
    env = {
        **pg.address.libpq_env("postgres"),
        "PATH": f"{embedded_bin_dir()}:/usr/bin:/bin",
        "POSTGRES_USER": pg.address.user,
        "POSTGRES_DB": "postgres",
        "API_DB_NAME": database,
        "API_DB_USER": owner,
        "API_DB_PASSWORD": "p@ss'w\"rd",
    }
    # The image's entrypoint sources a script it may not execute; bash runs it the same way.
    result = subprocess.run(["bash", "-c", f'set -Eeo pipefail; source "{script}"'], env=env, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()
    rows = pg.query("postgres", "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", database)
    assert [row[0] for row in rows] == [owner]
    if own_role:
        (flags,) = pg.query(
            "postgres", "SELECT rolcanlogin, rolcreatedb, rolsuper FROM pg_roles WHERE rolname = $1", role
        )
        assert tuple(flags) == (True, True, False)


def test_kubernetes_makes_the_api_database_as_compose_does(compose: dict[str, Any]) -> None:
    """deploy/kubernetes's PostgreSQL runs this same script: both deploys start from the same databases and roles."""
    script = PROJECT_ROOT / "deploy" / "kubernetes" / "components" / "postgres" / "10-create-api-database.sh"
    body = "".join(line for line in script.read_text().splitlines(keepends=True) if not line.startswith("#"))
    assert body.strip() == init_script(compose).strip()


def compose_cli() -> list[str] | None:
    """`docker compose` or `docker-compose`, whichever answers; None when neither is installed."""
    for cli in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(cli[0]) and subprocess.run([*cli, "version"], capture_output=True, check=False).returncode == 0:
            return cli
    return None


def test_docker_compose_accepts_the_file() -> None:
    cli = compose_cli()
    if cli is None:
        pytest.skip("no Docker Compose CLI on this machine; the checks above stand in for `docker compose config`")
    result = subprocess.run([*cli, "-f", str(COMPOSE_FILE), "config", "--quiet"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
