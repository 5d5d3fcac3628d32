"""`lint-migrations`: squawk on each revision's own SQL fails dangerous revisions and passes the project's."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from app.cli import main
from app.cli.context import CommandContext
from app.errors import SetupError
from app.migrations.lint import (
    CONTRACT_IN_EXPAND,
    IGNORED_IN_EXPAND,
    SQUAWK_CONFIG,
    lint_migrations,
    render_upgrade_sql,
    squawk_findings,
)
from app.migrations.revisions import VERSIONS_DIR, alembic_config
from tests.support.databases import HEAD, Databases
from tests.support.revisions import revision_file

PROJECT_REVISIONS = ["0001", "0002", "0003", "0004", "0005", "0006"]


def with_third_revision(pg: Databases, tmp_path: Path, body: str, phase: str = "expand") -> Config:
    """The project's revisions plus a third one whose upgrade is `body`, in a folder of the test's own."""
    versions = tmp_path / "versions"
    shutil.copytree(VERSIONS_DIR, versions, ignore=shutil.ignore_patterns("__pycache__"))
    (versions / "0900_third.py").write_text(revision_file("0900", HEAD, body, message="A third revision", phase=phase))
    config = alembic_config(pg.settings(pg.new_name("never_created")), configure_logging=False)
    config.set_main_option("version_locations", str(versions))
    return config


def lint(pg: Databases, tmp_path: Path, body: str, phase: str = "expand") -> list[tuple[str, str]]:
    """The (revision, rule) of each finding."""
    revisions, findings = lint_migrations(with_third_revision(pg, tmp_path, body, phase))
    assert [r.revision for r in revisions] == [*PROJECT_REVISIONS, "0900"]
    return [(f.revision.revision, f.rule) for f in findings]


def test_the_projects_revisions_pass(pg: Databases, capsys: pytest.CaptureFixture[str]) -> None:
    # No database is needed: the SQL is rendered offline.
    assert main(["lint-migrations"], settings=pg.settings(pg.new_name("never_created"))) == 0
    assert f"{len(PROJECT_REVISIONS)} revisions linted with squawk" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("body", "rule", "phase"),
    [
        ('    op.create_index("ix_users_email", "users", ["email"])', "require-concurrent-index-creation", "expand"),
        (
            '    op.add_column("users", sa.Column("nickname", sa.String(20), nullable=False))',
            "adding-required-field",
            "contract",
        ),
        ('    op.alter_column("users", "full_name", type_=sa.Text())', "changing-column-type", "contract"),
        ('    op.drop_column("users", "phone_number")', "ban-drop-column", "contract"),
        ('    op.alter_column("users", "full_name", new_column_name="name")', "renaming-column", "contract"),
    ],
    ids=["index", "not-null", "type", "drop", "rename"],
)
def test_a_dangerous_revision_fails(pg: Databases, tmp_path: Path, body: str, rule: str, phase: str) -> None:
    # `users` was created by 0001: linting 0900's SQL on its own sees that it already exists.
    findings = lint(pg, tmp_path, body, phase)
    assert ("0900", rule) in findings
    assert {revision for revision, _ in findings} == {"0900"}


def test_lint_migrations_command_fails_on_a_dangerous_revision(
    pg: Databases, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = with_third_revision(pg, tmp_path, '    op.drop_column("users", "phone_number")', "contract")
    monkeypatch.setattr(CommandContext, "alembic", lambda self: config)
    assert main(["lint-migrations"], settings=pg.settings(pg.new_name("never_created"))) == 1
    said = capsys.readouterr()
    assert "0900_third.py: ban-drop-column: " in said.out
    assert "error: 1 finding(s) in the migrations" in said.err


def test_the_projects_squawk_config_requires_timeouts(tmp_path: Path) -> None:
    # Rendered revisions always set them; a statement run after an autocommit_block may not.
    bare = tmp_path / "bare.sql"
    bare.write_text("ALTER TABLE users ADD COLUMN x int;\n")
    rules = {finding["rule_name"] for finding in squawk_findings([bare], SQUAWK_CONFIG)}
    assert {"require-lock-timeout", "require-statement-timeout"} <= rules


def test_a_finding_names_the_file_the_rule_and_the_way_out(pg: Databases, tmp_path: Path) -> None:
    body = '    op.add_column("users", sa.Column("nickname", sa.String(20), nullable=False))'
    (finding,) = lint_migrations(with_third_revision(pg, tmp_path, body, "contract"))[1]
    said = str(finding)
    assert said.startswith(f"{tmp_path / 'versions' / '0900_third.py'}: adding-required-field: ")
    assert "SQL: ALTER TABLE users ADD COLUMN nickname VARCHAR(20) NOT NULL;" in said
    assert "way out: two steps, as the guide says: add the column nullable" in said


def test_the_safe_ways_pass(pg: Databases, tmp_path: Path) -> None:
    body = """    with op.get_context().autocommit_block():
        op.create_index("ix_users_email", "users", ["email"], postgresql_concurrently=True, if_not_exists=True)
    op.add_column("users", sa.Column("nickname", sa.String(20), nullable=False, server_default=""))
    op.create_table("rentals", sa.Column("id", sa.Integer, primary_key=True), sa.Column("user_id", sa.Integer))
    op.create_index("ix_rentals_user_id", "rentals", ["user_id"])"""
    assert lint(pg, tmp_path, body) == []


def test_a_contract_revision_marks_its_deliberate_drop(pg: Databases, tmp_path: Path) -> None:
    body = (
        '    op.drop_column("users", "phone_number")  # squawk-ignore: ban-drop-column (unused since the last release)'
    )
    assert lint(pg, tmp_path, body, "contract") == []


@pytest.mark.parametrize(
    ("body", "what"),
    [
        ('    op.drop_column("users", "phone_number")', "drops a column"),
        ('    op.alter_column("users", "full_name", new_column_name="name")', "renames a column or table"),
        ('    op.alter_column("users", "full_name", type_=sa.Text())', "changes a column's type"),
        ('    op.alter_column("users", "full_name", nullable=False)', "makes a column NOT NULL"),
        ('    op.drop_table("account_tokens")', "drops a table"),
        (
            '    op.create_check_constraint("full_name_set", "users", "full_name IS NOT NULL")',
            "adds a constraint the previous release's writes may break",
        ),
    ],
    ids=["drop", "rename", "type", "not-null", "drop-table", "check"],
)
def test_an_expand_revision_that_only_a_contract_may_write_fails(
    pg: Databases, tmp_path: Path, body: str, what: str
) -> None:
    findings = lint_migrations(with_third_revision(pg, tmp_path, body))[1]
    (finding,) = [finding for finding in findings if finding.rule == CONTRACT_IN_EXPAND]
    said = str(finding)
    assert said.startswith(
        f"{tmp_path / 'versions' / '0900_third.py'}: {CONTRACT_IN_EXPAND}: an expand revision {what}"
    )
    assert 'way out: give the revision `phase = "contract"`' in said
    assert "squawk-ignore" not in said  # no mark makes it an expand revision's to do


def test_a_squawk_ignore_does_not_make_a_drop_fit_for_an_expand_revision(pg: Databases, tmp_path: Path) -> None:
    body = '    op.drop_column("users", "phone_number")  # squawk-ignore: ban-drop-column'
    assert sorted(lint(pg, tmp_path, body)) == [("0900", CONTRACT_IN_EXPAND), ("0900", IGNORED_IN_EXPAND)]


@pytest.mark.parametrize(
    ("config", "said"),
    [
        ("excluded_rules = [\n", "unexpected eof"),
        ('excluded_rules = ["no-such-rule"]\n', "invalid rule name no-such-rule"),
    ],
    ids=["syntax", "unknown-rule"],
)
def test_a_squawk_that_cannot_lint_fails_the_lint(pg: Databases, tmp_path: Path, config: str, said: str) -> None:
    # squawk then exits 1 with nothing on stdout: read as "no findings", every revision would pass.
    broken = tmp_path / "squawk.toml"
    broken.write_text(config)
    with pytest.raises(SetupError) as failed:
        lint_migrations(alembic_config(pg.settings(pg.new_name("never_created")), configure_logging=False), broken)
    message = str(failed.value)
    assert message.startswith(f"squawk failed, nothing was linted: Configuration error: {said}")
    assert message.endswith(f"(its config: {broken})")
    assert "\n" not in message


def test_the_linted_sql_has_the_default_timeouts_whatever_the_local_ones(pg: Databases) -> None:
    # '0ms' (no limit at all) would satisfy squawk's require-lock-timeout.
    local = pg.settings(pg.new_name("never_created"), migration_lock_timeout=0, migration_statement_timeout=0)
    config = alembic_config(local, configure_logging=False)
    head, *_ = ScriptDirectory.from_config(config).walk_revisions()
    sql = render_upgrade_sql(config, head)
    assert "SET lock_timeout = '5000ms';" in sql
    assert "SET statement_timeout = '60000ms';" in sql
    assert "'0ms'" not in sql
