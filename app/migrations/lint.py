"""`just lint-migrations`: each revision's upgrade SQL, rendered offline on its own, checked by squawk."""

from __future__ import annotations

import copy
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from alembic import util
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.script import Script, ScriptDirectory

from app.db.pg_tools import first_error
from app.errors import SetupError
from app.migrations.phases import EXPAND, contract_operations, phase_of
from app.settings import PROJECT_ROOT, Settings, get_settings

SQUAWK_CONFIG = PROJECT_ROOT / "alembic" / "squawk.toml"
# The time-outs the lint renders, whatever the local settings: squawk takes any `SET lock_timeout` as a limit, so
# MIGRATION_LOCK_TIMEOUT=0 ('0ms', no limit at all) would pass its require-lock-timeout rule.
_LINT_TIMEOUTS = {
    name: Settings.model_fields[name].default for name in ("migration_lock_timeout", "migration_statement_timeout")
}
# A revision that does a flagged thing on purpose says so: `# squawk-ignore: ban-drop-column`.
_IGNORE = re.compile(r"#\s*squawk-ignore:\s*([\w\-, ]+)")
# Alembic renders one statement a paragraph, each ending with `;` at the end of a line.
_STATEMENT_END = re.compile(r";\s*$", re.M)

_INDEX = (
    "build it in a revision of its own, outside the transaction (migrate, downgrade, alembic and startup all run "
    "it, one at a time, under the time-outs):\n"
    "        with op.get_context().autocommit_block():\n"
    '            op.create_index("ix_users_city", "users", ["city"], postgresql_concurrently=True, if_not_exists=True)'
)
_DROP_INDEX = (
    "drop it in a revision of its own, outside the transaction:\n"
    "        with op.get_context().autocommit_block():\n"
    '            op.drop_index("ix_users_city", "users", postgresql_concurrently=True, if_exists=True)'
)
_TWO_STEPS = "two steps, as the guide says: {first}; release that code; then {then} in a later revision"
_REPLACE = _TWO_STEPS.format(
    first="add the new column or table beside the old one, write both and backfill, switch the reads",
    then="drop the old one",
)
_STOP_USING = _TWO_STEPS.format(first="stop using it in the models and the code", then="drop it")
# The way out of each rule's trap; a rule not listed gets the general one.
ADVICE = {
    "require-concurrent-index-creation": _INDEX,
    "require-concurrent-index-deletion": _DROP_INDEX,
    "ban-concurrent-index-creation-in-transaction": "wrap it in `with op.get_context().autocommit_block():`",
    "prefer-robust-stmts": "outside a transaction a failure leaves part of the change behind: make the statement "
    "safe to run again (if_not_exists=True / if_exists=True); `just migrate` rebuilds an index a stopped build left "
    "INVALID",
    "adding-required-field": _TWO_STEPS.format(
        first="add the column nullable or with a server_default, and fill it", then="make it NOT NULL"
    ),
    "adding-not-nullable-field": "add a CHECK (column IS NOT NULL) NOT VALID, VALIDATE CONSTRAINT in the next "
    "revision, then SET NOT NULL (PostgreSQL skips the scan) and drop the CHECK",
    "changing-column-type": _REPLACE,
    "renaming-column": _REPLACE,
    "renaming-table": _REPLACE,
    "ban-drop-column": _STOP_USING,
    "ban-drop-table": _STOP_USING,
    "adding-foreign-key-constraint": "add it NOT VALID (postgresql_not_valid=True), VALIDATE CONSTRAINT in the "
    "next revision",
    "constraint-missing-not-valid": "a foreign key or CHECK: add it NOT VALID, VALIDATE CONSTRAINT in the next "
    "revision; a UNIQUE one: build a unique index CONCURRENTLY first, then add the constraint USING INDEX",
    "disallowed-unique-constraint": "build a unique index CONCURRENTLY first, then add the constraint USING INDEX",
    "require-lock-timeout": "env.py sets lock_timeout for the whole run, autocommit blocks included: leave it set "
    "(no SET lock_timeout = 0 in a revision)",
}
GENERAL_ADVICE = "split the change into steps that each keep the running code working (add, backfill, then constrain)"

# Squawk's rules for what breaks the previous release's code: only a contract revision may mark one as deliberate.
CONTRACT_RULES = frozenset(
    {
        "ban-drop-column",
        "ban-drop-table",
        "ban-drop-database",
        "renaming-column",
        "renaming-table",
        "changing-column-type",
        "adding-not-nullable-field",
        "adding-required-field",
        "constraint-missing-not-valid",
        "adding-foreign-key-constraint",
        "disallowed-unique-constraint",
    }
)
# The lint's own rules about phases (see phases.py).
CONTRACT_IN_EXPAND = "contract-operation-in-expand-revision"
IGNORED_IN_EXPAND = "contract-rule-ignored-in-expand-revision"
_TO_CONTRACT = (
    'give the revision `phase = "contract"` (it then applies once no older release runs), and keep what the previous '
    "release's code survives (new tables, nullable columns, indexes) in an expand revision before it"
)
ADVICE |= {CONTRACT_IN_EXPAND: _TO_CONTRACT, IGNORED_IN_EXPAND: _TO_CONTRACT}


class MigrationLintError(SetupError):
    """A revision does something that can stall the service or lose data."""


@dataclass(frozen=True)
class Finding:
    """One rule a revision breaks."""

    revision: Script
    rule: str
    message: str
    line: int
    statement: str

    def __str__(self) -> str:
        path = Path(self.revision.path)
        where = path.relative_to(PROJECT_ROOT) if path.is_relative_to(PROJECT_ROOT) else path
        said = f"{where}: {self.rule}: {self.message}\n    SQL: {self.statement}\n"
        said += f"    way out: {ADVICE.get(self.rule, GENERAL_ADVICE)}"
        if self.rule in (CONTRACT_IN_EXPAND, IGNORED_IN_EXPAND):
            return said
        return f"{said}\n    on purpose (the second step, say)? mark the revision: # squawk-ignore: {self.rule}"


def _ignored(revision: Script) -> set[str]:
    text = Path(revision.path).read_text()
    return {rule.strip() for found in _IGNORE.findall(text) for rule in found.split(",") if rule.strip()}


def render_upgrade_sql(config: Config, revision: Script) -> str:
    """The SQL of this revision's upgrade alone, from its parents (`alembic upgrade parent:rev --sql`).

    With the default time-outs, not the local ones: the SQL is the same on every machine.
    """
    settings = config.attributes.get("settings") or get_settings()
    config = copy.copy(config)  # the caller's keeps its settings and output buffer
    config.attributes = {**config.attributes, "settings": settings.model_copy(update=_LINT_TIMEOUTS)}
    script = ScriptDirectory.from_config(config)
    buffer = config.output_buffer = io.StringIO()
    parents = util.to_tuple(revision.down_revision, default=())
    # A tuple of parents works where "a:b" cannot: a merge revision starts from both of them.
    with EnvironmentContext(
        config,
        script,
        fn=lambda rev, context: script._upgrade_revs(revision.revision, rev),
        as_sql=True,
        starting_rev=parents or "base",
        destination_rev=revision.revision,
    ):
        script.run_env()
    return buffer.getvalue()


def squawk_findings(paths: list[Path], squawk_config: Path) -> list[dict[str, object]]:
    """Squawk's findings on the SQL files, as its JSON reporter gives them."""
    # Beside this interpreter first: `.venv/bin/python -m app` works without the venv on PATH.
    squawk = shutil.which("squawk", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    if squawk is None:
        raise SetupError("squawk is not installed; run `uv sync` (it comes with the dev dependencies)")
    command = [squawk, f"--config={squawk_config}", "--reporter=json", *map(str, paths)]
    result = subprocess.run(command, capture_output=True, check=False)
    try:
        found: object = json.loads(result.stdout)
    except json.JSONDecodeError:
        found = None
    # Findings make squawk exit 1 too; a failure to lint (a broken config, say) leaves no findings to show.
    if not isinstance(found, list) or (result.returncode != 0 and not found):
        said = first_error(result.stderr or result.stdout, result.returncode)
        shown = squawk_config.relative_to(PROJECT_ROOT) if squawk_config.is_relative_to(PROJECT_ROOT) else squawk_config
        raise SetupError(f"squawk failed, nothing was linted: {said[:200]} (its config: {shown})")
    return found


def lint_migrations(config: Config, squawk_config: Path = SQUAWK_CONFIG) -> tuple[list[Script], list[Finding]]:
    """Lint every revision's upgrade SQL on its own (so a table made by an earlier revision counts as existing)."""
    revisions = list(reversed(list(ScriptDirectory.from_config(config).walk_revisions())))
    with tempfile.TemporaryDirectory(prefix="lint-migrations-") as folder:
        files = {}
        for revision in revisions:
            path = Path(folder) / f"{Path(revision.path).stem}.sql"
            path.write_text(render_upgrade_sql(config, revision))
            files[str(path)] = revision
        findings = [finding for path, revision in files.items() for finding in phase_findings(revision, Path(path))]
        for item in squawk_findings([Path(name) for name in files], squawk_config):
            revision = files[str(item["file"])]
            lines = Path(str(item["file"])).read_text().splitlines()
            line = int(str(item["line"]))
            statement = lines[line].strip() if line < len(lines) else ""
            rule = str(item["rule_name"])
            if rule not in _ignored(revision):
                findings.append(Finding(revision, rule, str(item["message"]), line, statement))
    return revisions, findings


def phase_findings(revision: Script, sql: Path) -> list[Finding]:
    """What an expand revision does that only a contract revision may, from its rendered SQL and its marks."""
    if phase_of(revision) != EXPAND:
        return []
    text = sql.read_text()
    statements = [_without_comments(statement) for statement in _STATEMENT_END.split(text)]
    findings = [
        Finding(
            revision,
            CONTRACT_IN_EXPAND,
            f"an expand revision {operation.what}: the previous release's code, still serving during the rollout, "
            "would break",
            _line_of(text, operation.statement),
            operation.statement,
        )
        for operation in contract_operations([statement for statement in statements if statement])
    ]
    findings += [
        Finding(
            revision,
            IGNORED_IN_EXPAND,
            f"`# squawk-ignore: {rule}` marks something only a contract revision may do, in an expand revision",
            0,
            f"# squawk-ignore: {rule}",
        )
        for rule in sorted(_ignored(revision) & CONTRACT_RULES)
    ]
    return findings


def _without_comments(statement: str) -> str:
    return "\n".join(line for line in statement.splitlines() if not line.lstrip().startswith("--")).strip()


def _line_of(text: str, statement: str) -> int:
    first = statement.split()[0:3]
    for number, line in enumerate(text.splitlines()):
        if line.split()[0:3] == first:
            return number
    return 0
