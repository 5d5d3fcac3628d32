"""`python -m app` as a person uses it: the questions it asks on a terminal, what it lists, and the justfile over it."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app.cli import build_parser, main
from app.settings import PROJECT_ROOT, Settings
from tests.support.databases import API_TABLES, Databases, run_app


def public_tables(pg: Databases, db: str) -> set[str]:
    rows = pg.query(db, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
    return {row[0] for row in rows}


@pytest.fixture
def answer(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A terminal on which the person types, one answer a question, what the test appends."""
    typed: list[str] = []
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda question="": typed.pop(0))
    return typed


@pytest.fixture
def settings(pg: Databases, api_db: str, tmp_path: Path) -> Settings:
    return pg.settings(api_db, backup_dir=tmp_path / "backups")


def test_revision_without_a_message_asks_for_one(settings: Settings, tmp_path: Path, answer: list[str]) -> None:
    answer.append("Add nickname to users")
    assert main(["revision", "--version-path", str(tmp_path)], settings=settings) == 0
    (written,) = tmp_path.glob("*.py")
    assert written.name.endswith("_add_nickname_to_users.py")
    assert '"""Add nickname to users' in written.read_text()


def test_reset_answered_yes_drops_the_api_tables(pg: Databases, settings: Settings, answer: list[str]) -> None:
    answer.append("y")
    assert main(["reset"], settings=settings) == 0
    assert public_tables(pg, settings.api_db_name) == set()


def test_reset_answered_no_drops_nothing(
    pg: Databases, settings: Settings, answer: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    answer.append("n")
    assert main(["reset"], settings=settings) == 1
    assert "Nothing dropped." in capsys.readouterr().out
    assert public_tables(pg, settings.api_db_name) == API_TABLES


def test_restore_answered_no_restores_nothing(
    pg: Databases, settings: Settings, answer: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["backup"], settings=settings) == 0
    pg.add_user(settings.api_db_name, "ann")
    answer.append("n")
    assert main(["restore"], settings=settings) == 1
    assert "Nothing restored." in capsys.readouterr().out
    assert pg.query(settings.api_db_name, "SELECT username FROM users")[0][0] == "ann"
    assert len(list(settings.backup_dir.iterdir())) == 1  # not even the backup a restore takes first


def test_history_lists_both_revisions_and_marks_the_head(pg: Databases, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["history"], settings=pg.settings(pg.new_name("never_created"))) == 0
    assert capsys.readouterr().out.splitlines() == [
        "0005 -> 0006 (head), Add the instance registry",
        "0004 -> 0005, Add email verification and mailed account tokens",
        "0003 -> 0004, Add user sessions and refresh tokens",
        "0002 -> 0003, Index role holders by role, then user, for keyset pages",
        "0001 -> 0002, Add phone_number to users table",
        "<base> -> 0001, Initial schema with users and roles tables",
    ]


@pytest.mark.slow
def test_psql_runs_on_the_api_database(pg: Databases, api_db: str) -> None:
    result = run_app(["psql", "-tAc", "select current_database()"], pg.env(api_db))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{api_db}\n"
    # With a schema of the API's own, psql works within it: `\dt` shows the API's tables.
    env = {**pg.env(api_db), "API_DB_SCHEMA": "api"}
    assert run_app(["migrate"], env).returncode == 0
    result = run_app(["psql", "-tAc", "select current_schema(), count(*) from users"], env)
    assert result.stdout == "api|0\n", result.stderr


@pytest.fixture(scope="module")
def justfile() -> dict[str, Any]:
    dump = [str(Path(sys.executable).parent / "just"), "--dump", "--dump-format", "json"]
    result = subprocess.run(dump, cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def test_every_recipe_says_what_it_does_in_just_list(justfile: dict[str, Any]) -> None:
    assert [name for name, recipe in justfile["recipes"].items() if not recipe["doc"]] == []


def test_the_guides_make_names_are_aliases(justfile: dict[str, Any]) -> None:
    assert {name: alias["target"] for name, alias in justfile["aliases"].items()} == {
        "db-init": "init",
        "db-upgrade": "migrate",
        "db-migrate": "revision",
        "db-seed": "seed",
        "db-downgrade": "downgrade",
        "db-current": "current",
        "db-history": "history",
        "db-reset": "reset",
    }


def test_every_app_command_has_a_recipe_that_runs_it(justfile: dict[str, Any]) -> None:
    (subcommands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    variables = {name: assignment["value"] for name, assignment in justfile["assignments"].items()}

    def lines(recipe: str) -> list[str]:
        """The recipe's command lines, with `{{ app }}` and the like written out."""
        body = justfile["recipes"].get(recipe, {"body": []})["body"]
        return ["".join(part if isinstance(part, str) else variables[part[0][1]] for part in line) for line in body]

    runs = {
        name: any(re.search(rf"python -m app {name}(\s|$)", line) for line in lines(name))
        for name in subcommands.choices
    }
    assert len(runs) > 10
    assert [name for name, ok in runs.items() if not ok] == []
