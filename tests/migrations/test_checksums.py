"""An applied revision can't change unnoticed, and two unmerged heads stop every command with the way out."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config

from app.cli import main
from app.migrations.checksums import RevisionChangedError, file_checksum
from app.migrations.revisions import ALEMBIC_INI, VERSIONS_DIR, MultipleHeadsError, alembic_config
from app.settings import PROJECT_ROOT
from tests.support.databases import HEAD, Databases

SECOND = "alembic/versions/2026_11_24_1105-0002_add_phone_number_to_users_table.py"


def recorded(pg: Databases, db: str) -> dict[str, str]:
    return {row["revision"]: row["sha256"] for row in pg.query(db, "SELECT revision, sha256 FROM alembic_checksums")}


def copied_versions(tmp_path: Path) -> Path:
    versions = tmp_path / "versions"
    shutil.copytree(VERSIONS_DIR, versions, ignore=shutil.ignore_patterns("__pycache__"))
    return versions


def config_for(pg: Databases, db: str, versions: Path) -> Config:
    config = alembic_config(pg.settings(db), configure_logging=False)
    config.set_main_option("version_locations", str(versions))
    return config


def test_migrate_records_each_revision_and_downgrade_forgets_it(pg: Databases, empty_db: str) -> None:
    settings = pg.settings(empty_db)
    assert main(["migrate"], settings=settings) == 0
    files = {path.name.split("-")[1][:4]: file_checksum(path) for path in VERSIONS_DIR.glob("*.py")}
    assert recorded(pg, empty_db) == files
    assert main(["downgrade"], settings=settings) == 0
    assert recorded(pg, empty_db) == {rev: sha for rev, sha in files.items() if rev != HEAD}


def test_a_database_migrated_before_checksums_gets_them_on_the_next_migrate(pg: Databases, api_db: str) -> None:
    pg.query(api_db, "DROP TABLE alembic_checksums")
    assert main(["migrate"], settings=pg.settings(api_db)) == 0
    assert set(recorded(pg, api_db)) == {path.name.split("-")[1][:4] for path in VERSIONS_DIR.glob("*.py")}


@pytest.mark.parametrize("args", [["migrate"], ["current"], ["check"], ["downgrade"]], ids=" ".join)
def test_commands_refuse_a_changed_applied_revision(
    pg: Databases, api_db: str, args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # As if the file had been edited since it was applied: the database remembers another checksum.
    pg.query(api_db, "UPDATE alembic_checksums SET sha256 = repeat('0', 64) WHERE revision = '0002'")
    assert main(args, settings=pg.settings(api_db)) == 1
    err = capsys.readouterr().err
    assert f"error: {SECOND} changed after it was applied to database '{api_db}'" in err
    assert "create a new revision instead" in err
    assert pg.query(api_db, "SELECT version_num FROM alembic_version")[0][0] == HEAD


def test_editing_an_applied_revision_stops_the_next_migration(pg: Databases, empty_db: str, tmp_path: Path) -> None:
    versions = copied_versions(tmp_path)
    config = config_for(pg, empty_db, versions)
    command.upgrade(config, "0001")
    (first,) = versions.glob("*0001_*.py")
    first.write_text(first.read_text().replace('"users"', '"people"'))
    with pytest.raises(RevisionChangedError, match=f"{first} changed after it was applied"):
        command.upgrade(config, "head")
    assert pg.query(empty_db, "SELECT version_num FROM alembic_version")[0][0] == "0001"


def test_line_endings_are_not_an_edit(tmp_path: Path) -> None:
    (original,) = VERSIONS_DIR.glob("*0001_*.py")
    windows = tmp_path / original.name
    windows.write_bytes(original.read_bytes().replace(b"\n", b"\r\n"))
    assert file_checksum(windows) == file_checksum(original)


def two_heads(tmp_path: Path) -> Path:
    versions = copied_versions(tmp_path)
    for rev in ("0003a", "0003b"):
        (versions / f"{rev}_branch.py").write_text(
            f'revision = "{rev}"\ndown_revision = "{HEAD}"\n\n\ndef upgrade() -> None:\n    pass\n'
        )
    return versions


def test_two_heads_name_both_and_the_merge_command(pg: Databases, api_db: str, tmp_path: Path) -> None:
    config = config_for(pg, api_db, two_heads(tmp_path))
    expected = (
        r"2 heads, 0003a \(0003a_branch.py\), 0003b \(0003b_branch.py\).*"
        r'`uv run alembic merge -m "Merge 0003a and 0003b" 0003a 0003b`'
    )
    with pytest.raises(MultipleHeadsError, match=expected):
        command.upgrade(config, "head")
    with pytest.raises(MultipleHeadsError, match=expected):
        command.current(config)


@pytest.mark.slow
def test_plain_alembic_with_two_heads_says_failed_without_a_traceback(
    pg: Databases, api_db: str, tmp_path: Path
) -> None:
    ini = tmp_path / "alembic.ini"
    text = ALEMBIC_INI.read_text().replace("%(here)s/alembic", str(PROJECT_ROOT / "alembic"))
    ini.write_text(text.replace("[alembic]", f"[alembic]\nversion_locations = {two_heads(tmp_path)}", 1))
    alembic = [sys.executable, "-m", "alembic", "-c", str(ini), "upgrade", "head"]
    result = subprocess.run(alembic, env=pg.env(api_db), cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
    said = result.stdout + result.stderr
    assert result.returncode != 0
    assert "FAILED: the migrations have 2 heads" in said
    assert "alembic merge" in said
    assert "Traceback" not in said
