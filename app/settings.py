"""Service and database settings, read once from the environment and `.env`."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_JWT_SECRET = "development-only-secret-change-me-0123456789"  # noqa: S105  (refused outside development)
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class Settings(BaseSettings):
    """Everything the service, the CLI and Alembic need to know about their environment."""

    model_config = SettingsConfigDict(env_file=PROJECT_ROOT / ".env", extra="ignore")

    # MLflow's database on the shared instance: the API never writes to it.
    postgres_user: str = "mlflow"
    postgres_password: SecretStr = SecretStr("mlflow")
    postgres_db: str = "mlflow"

    api_db_name: Annotated[str, Field(min_length=1, max_length=63)] = "bikerental_api"
    api_db_user: str = "mlflow"
    api_db_password: SecretStr = SecretStr("mlflow")
    # Unset: an embedded PostgreSQL whose data lives in `embedded_db_dir`.
    api_db_host: str | None = None
    api_db_port: int = 5432
    # Set: the API's tables, Alembic's version table and the checksum table live in this schema (created when
    # missing), so the API can share one database with MLflow in another schema. Unset: the server's default schema.
    api_db_schema: str | None = None
    embedded_db_dir: Path = PROJECT_ROOT / ".data" / "postgres"
    # True: API_DB_HOST:API_DB_PORT is PgBouncer in transaction mode, so no connection keeps session state there.
    api_db_pgbouncer: bool = False
    # The server itself, for what a transaction pooler cannot carry: session advisory locks, concurrent index builds,
    # pg_dump, CREATE DATABASE. Each unset one is API_DB_HOST's or API_DB_PORT's.
    migration_db_host: str | None = None
    migration_db_port: int | None = None

    # Migrations fail fast instead of queueing every request behind a lock they wait for (seconds; 0: no limit).
    migration_lock_timeout: Annotated[float, Field(ge=0)] = 5.0
    migration_statement_timeout: Annotated[float, Field(ge=0)] = 60.0
    # Statements in a revision's `autocommit_block()` (a concurrent index build): they lock no reader or writer out,
    # and on a big table they take longer than any other statement.
    migration_concurrent_timeout: Annotated[float, Field(ge=0)] = 3600.0
    # pg_dump archives of the API database; migrate, downgrade, reset and restore take one first when it holds rows.
    backup_dir: Path = PROJECT_ROOT / "backups"
    backup_keep: Annotated[int, Field(ge=1)] = 10
    auto_backup: bool = True

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # Deployments that migrate in a separate step set this to false: startup then only checks the revision.
    migrate_on_startup: bool = True
    # On SIGTERM an instance turns not-ready at once and keeps serving this long, so a balancer stops sending it
    # requests before it stops answering them (seconds; 0: stop at once).
    drain_seconds: Annotated[float, Field(ge=0)] = 5.0
    # Each instance writes a heartbeat this often; a contract revision waits for instances of older releases until
    # they stop, or until three beats went missing.
    instance_heartbeat_seconds: Annotated[float, Field(gt=0, le=3600)] = 10.0
    db_pool_size: Annotated[int, Field(ge=1)] = 10
    db_pool_timeout: Annotated[float, Field(gt=0)] = 5.0
    # Worker processes `serve` runs (`--workers` overrides): each has its own pools and a share of the hashers.
    web_concurrency: Annotated[int, Field(ge=1)] = 1

    # GET /metrics in Prometheus' text format; on a listener of its own when METRICS_PORT is set.
    metrics_enabled: bool = True
    metrics_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    # One JSON object a line for log collectors, or plain lines for a person at a terminal.
    log_format: Literal["json", "text"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # Argon2id cost: argon2-cffi's defaults, RFC 9106's low-memory profile (64 MiB per hash).
    argon2_time_cost: Annotated[int, Field(ge=1)] = 3
    argon2_memory_kib: Annotated[int, Field(ge=8)] = 65536
    argon2_parallelism: Annotated[int, Field(ge=1)] = 4
    # Hashes run at once (0: one per core) and how much hashing may queue before new sign-ups get 503.
    hash_workers: Annotated[int, Field(ge=0)] = 0
    hash_queue_seconds: Annotated[float, Field(gt=0)] = 30.0

    # `development` accepts the example token secret; any other environment refuses to start with it. Left unset,
    # development is assumed only while the service listens on this machine alone.
    environment: str = "development"
    jwt_secret: SecretStr = SecretStr(EXAMPLE_JWT_SECRET)
    access_token_minutes: Annotated[int, Field(ge=1)] = 30
    # A login's session lasts this long after its last login or refresh; each refresh rotates the refresh token.
    refresh_token_days: Annotated[int, Field(ge=1, le=3650)] = 30
    # Sign-up and login attempts per client address and minute; Redis shares the count between instances.
    rate_limit_per_minute: Annotated[int, Field(ge=1)] = 20
    redis_url: str | None = None
    # Failed logins in a row for one username or email before it waits; the first wait (seconds), doubling with each
    # further failure up to the cap. The count is forgotten after the cap's time without an attempt.
    login_lockout_attempts: Annotated[int, Field(ge=1)] = 5
    login_lockout_seconds: Annotated[float, Field(gt=0)] = 60.0
    login_lockout_max_seconds: Annotated[float, Field(gt=0)] = 3600.0
    # Sign-up mails a verification token; with this set, login waits until the address is verified.
    require_verified_email: bool = False
    email_verification_hours: Annotated[int, Field(ge=1)] = 48
    password_reset_minutes: Annotated[int, Field(ge=1)] = 30
    # `console` logs each mail, marked as the development backend, and sends nothing; `smtp` sends through SMTP_*.
    mail_backend: Literal["console", "smtp"] = "console"
    mail_from: str = "bikerental-api <no-reply@localhost>"
    smtp_host: str = "localhost"
    smtp_port: Annotated[int, Field(ge=1, le=65535)] = 587
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = True
    # For automation: `just create-admin` takes the password from here instead of asking.
    admin_password: SecretStr | None = None

    @field_validator("api_db_schema")
    @classmethod
    def _schema_is_a_plain_name(cls, value: str | None) -> str | None:
        # A plain name needs no quoting wherever it goes: search_path, pg_dump's --table, PGOPTIONS.
        system = value is not None and (value.startswith("pg_") or value == "information_schema")
        if value is not None and (system or not _SCHEMA_NAME.fullmatch(value)):
            raise ValueError(
                f"API_DB_SCHEMA '{value}' is not a plain schema name: use lower-case letters, digits and _ "
                "(at most 63, not starting with a digit), and not a system schema (pg_*, information_schema)"
            )
        return value

    @field_validator("log_format", mode="before")
    @classmethod
    def _format_in_any_case(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_any_case(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _metrics_port_is_not_the_api_port(self) -> Settings:
        if self.metrics_port == self.api_port:
            raise ValueError(
                f"METRICS_PORT and API_PORT are both {self.api_port}: leave METRICS_PORT unset to serve /metrics "
                "on the API port, or give it a port of its own"
            )
        return self

    @model_validator(mode="after")
    def _api_db_is_not_mlflow_db(self) -> Settings:
        if self.api_db_name == self.postgres_db and not self.api_db_schema:
            raise ValueError(
                f"API_DB_NAME and POSTGRES_DB are both '{self.api_db_name}': the API database must be "
                "separate from MLflow's; set API_DB_NAME to another name, or API_DB_SCHEMA to a schema of the API's own"
            )
        return self

    @model_validator(mode="after")
    def _pooler_needs_a_configured_server(self) -> Settings:
        # The embedded server has no pooler in front of it, and its commands must reach the same server the service
        # uses.
        given = {
            "API_DB_PGBOUNCER": self.api_db_pgbouncer,
            "MIGRATION_DB_HOST": self.migration_db_host,
            "MIGRATION_DB_PORT": self.migration_db_port,
        }
        setting = next((name for name, value in given.items() if value), None)
        if self.embedded and setting:
            raise ValueError(
                f"{setting} is set but API_DB_HOST is not: set API_DB_HOST and API_DB_PORT to the server (or the "
                f"PgBouncer) the service connects to, or unset {setting} to use the embedded PostgreSQL"
            )
        return self

    @model_validator(mode="after")
    def _secret_is_not_the_example(self) -> Settings:
        how = "set JWT_SECRET to a secret of your own: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        if self.uses_example_secret and self.environment != "development":
            raise ValueError(f"JWT_SECRET is the example value and ENVIRONMENT is '{self.environment}'; {how}")
        # Anyone can sign tokens with the published example: a service others can reach must not trust it by default.
        reachable = self.api_host not in LOOPBACK_HOSTS
        if self.uses_example_secret and reachable and "environment" not in self.model_fields_set:
            raise ValueError(
                f"JWT_SECRET is the example value and API_HOST {self.api_host} is reachable from other machines; "
                f"{how} (or set ENVIRONMENT=development on a development network)"
            )
        if len(self.jwt_secret.get_secret_value()) < 32:
            raise ValueError("JWT_SECRET must be at least 32 characters")
        return self

    @model_validator(mode="after")
    def _lockout_cap_is_not_below_the_first_wait(self) -> Settings:
        if self.login_lockout_max_seconds < self.login_lockout_seconds:
            raise ValueError("LOGIN_LOCKOUT_MAX_SECONDS must be at least LOGIN_LOCKOUT_SECONDS")
        return self

    @model_validator(mode="after")
    def _mails_are_sent_outside_development(self) -> Settings:
        # The console backend logs each mail whole: a reset token in a log line is an account for anyone who reads it.
        if self.mail_backend == "console" and self.environment != "development":
            raise ValueError(
                f"MAIL_BACKEND is console (mails, with their reset tokens, go to the log) and ENVIRONMENT is "
                f"'{self.environment}'; set MAIL_BACKEND=smtp and SMTP_HOST, SMTP_PORT, SMTP_USERNAME, SMTP_PASSWORD"
            )
        return self

    def as_environment(self) -> dict[str, str]:
        """These settings as the environment variables that give them, for a process of another release."""
        env = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[name.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
        return env

    @property
    def uses_example_secret(self) -> bool:
        """True when tokens would be signed with the published example secret."""
        return self.jwt_secret.get_secret_value() == EXAMPLE_JWT_SECRET

    @property
    def embedded(self) -> bool:
        """True when no server is configured and the project runs its own PostgreSQL."""
        return not self.api_db_host

    @property
    def direct_connection_set(self) -> bool:
        """True when MIGRATION_DB_HOST or MIGRATION_DB_PORT names the server apart from the service's address."""
        return bool(self.migration_db_host or self.migration_db_port)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read once."""
    return Settings()
