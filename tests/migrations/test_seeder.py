"""The role seeder: idempotent, race-free, and only on a migrated database."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from app.cli import main
from tests.support.databases import HEAD, Databases, run_app


def roles(pg: Databases, db: str) -> list[tuple[str, str]]:
    return [(r["name"], r["description"]) for r in pg.query(db, "SELECT name, description FROM roles ORDER BY id")]


def test_seed_creates_the_default_roles_then_finds_them(
    pg: Databases, api_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["seed"], settings=pg.settings(api_db)) == 0
    assert "created: user, admin, moderator" in capsys.readouterr().out
    assert main(["seed"], settings=pg.settings(api_db)) == 0
    assert "created: none; already there: user, admin, moderator" in capsys.readouterr().out
    assert roles(pg, api_db) == [("user", "Regular user"), ("admin", "Administrator"), ("moderator", "Moderator")]


@pytest.mark.slow
def test_five_seeder_processes_at_once_leave_three_roles(pg: Databases, api_db: str) -> None:
    env = pg.env(api_db)
    with ThreadPoolExecutor(5) as pool:
        results = list(pool.map(lambda _: run_app(["seed"], env), range(5)))
    assert [r.returncode for r in results] == [0] * 5, [r.stderr for r in results]
    assert sorted(name for name, _ in roles(pg, api_db)) == ["admin", "moderator", "user"]


def test_seed_on_an_unmigrated_database_asks_for_migrate(
    pg: Databases, empty_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["seed"], settings=pg.settings(empty_db)) == 1
    assert "run `just migrate`" in capsys.readouterr().err
    tables = pg.query(empty_db, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
    assert tables == []


def test_init_migrates_and_seeds(pg: Databases, empty_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init"], settings=pg.settings(empty_db)) == 0
    assert f"{HEAD} (head)" in capsys.readouterr().out
    assert len(roles(pg, empty_db)) == 3
