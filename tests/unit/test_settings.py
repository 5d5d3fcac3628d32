"""Settings: the guide's names and defaults, and values that would endanger MLflow refused at load."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.db.server import ServerAddress, server_address
from app.migrations.revisions import ALEMBIC_INI
from app.settings import PROJECT_ROOT, Settings
from tests.support.databases import Databases, run_app


@pytest.fixture
def no_settings_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment sets none of the settings, so only the file and the defaults count."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.mark.usefixtures("no_settings_in_env")
def test_defaults_follow_the_guide() -> None:
    settings = Settings(_env_file=None)
    assert (settings.postgres_db, settings.api_db_name, settings.api_db_user) == ("mlflow", "bikerental_api", "mlflow")
    assert settings.embedded


@pytest.mark.usefixtures("no_settings_in_env")
def test_credentials_default_to_the_guides() -> None:
    settings = Settings(_env_file=None)
    assert (settings.postgres_user, settings.postgres_password.get_secret_value()) == ("mlflow", "mlflow")
    assert (settings.api_db_user, settings.api_db_password.get_secret_value()) == ("mlflow", "mlflow")
    assert settings.api_db_port == 5432


@pytest.mark.usefixtures("no_settings_in_env")
def test_settings_are_read_from_dot_env(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("API_DB_NAME=x\nAPI_DB_PORT=5433\n")
    settings = Settings(_env_file=tmp_path / ".env")
    assert (settings.api_db_name, settings.api_db_port) == ("x", 5433)


@pytest.mark.usefixtures("no_settings_in_env")
def test_every_value_in_the_example_env_is_the_default() -> None:
    assert Settings(_env_file=PROJECT_ROOT / ".env.example") == Settings(_env_file=None)


def test_alembic_ini_holds_no_database_url() -> None:
    ini = configparser.ConfigParser()
    ini.read(ALEMBIC_INI)
    assert not ini.get("alembic", "sqlalchemy.url", fallback="")


def test_api_database_named_like_mlflows_is_refused() -> None:
    with pytest.raises(ValidationError, match="API database must be separate from MLflow's"):
        Settings(_env_file=None, api_db_name="tracking", postgres_db="tracking")


def test_one_database_for_both_needs_a_schema_of_the_apis_own() -> None:
    settings = Settings(_env_file=None, api_db_name="appdb", postgres_db="appdb", api_db_schema="api")
    assert settings.api_db_schema == "api"
    with pytest.raises(ValidationError, match="API_DB_SCHEMA"):
        Settings(_env_file=None, api_db_schema="Api; drop")


@pytest.mark.slow
def test_cli_explains_a_refused_setting(pg: Databases) -> None:
    env = {**pg.env("mlflow"), "POSTGRES_DB": "mlflow"}
    result = run_app(["migrate"], env)
    assert result.returncode == 2
    assert "API_DB_NAME and POSTGRES_DB are both 'mlflow'" in result.stderr
    assert "Traceback" not in result.stderr


def test_configured_server_is_used_with_its_password() -> None:
    settings = Settings(
        _env_file=None, api_db_host="localhost", api_db_port=5433, api_db_user="api", api_db_password="p@ss:w/rd"
    )
    address = server_address(settings)
    assert address == ServerAddress(host="localhost", port=5433, user="api", password="p@ss:w/rd")
    url = address.url("bikerental_api")
    assert url.password == "p@ss:w/rd"
    assert "p@ss:w/rd" not in repr(settings)
    assert "p@ss:w/rd" not in str(url)
