"""Settings: the guide's names and defaults, and values that would endanger MLflow refused at load."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.db.server import ServerAddress, server_address
from app.settings import Settings
from tests.databases import Databases, run_app


def test_defaults_follow_the_guide() -> None:
    settings = Settings(_env_file=None)
    assert (settings.postgres_db, settings.api_db_name, settings.api_db_user) == ("mlflow", "bikerental_api", "mlflow")
    assert settings.embedded


def test_api_database_named_like_mlflows_is_refused() -> None:
    with pytest.raises(ValidationError, match="API database must be separate from MLflow's"):
        Settings(_env_file=None, api_db_name="tracking", postgres_db="tracking")


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
