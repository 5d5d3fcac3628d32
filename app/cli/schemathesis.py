"""Schemathesis as this project runs it: one configuration, one set of checks, one way to read its report."""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.errors import SetupError
from app.settings import PROJECT_ROOT

CONFIG = PROJECT_ROOT / "app" / "cli" / "schemathesis.toml"
HOOKS = PROJECT_ROOT / "app" / "cli" / "schemathesis_hooks.py"
# The admin CONFIG logs in as: (username, email, password).
FUZZ_ADMIN = ("fuzz_admin", "fuzz_admin@example.com", "fuzz admin password")
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "positive_data_acceptance",
)
ALL_PHASES = ("examples", "coverage", "fuzzing", "stateful")
# The suite's and check-compat's run: the coverage phase (every boundary and broken constraint of every schema) adds
# about 450 cases and 25 s.
QUICK_PHASES = ("examples", "fuzzing", "stateful")


def require_schemathesis() -> None:
    """Fail clearly when the dev dependencies are not installed."""
    bin_dir = str(Path(sys.executable).parent)
    if shutil.which("schemathesis", path=os.pathsep.join([bin_dir, os.environ.get("PATH", "")])) is None:
        raise SetupError("schemathesis is not installed; run `uv sync` (it comes with the dev dependencies)")


def environment() -> dict[str, str]:
    """The environment a run needs: this one, with the project's hooks."""
    return {**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)}


def command(
    document_url: str, report: Path, *, seed: int, phases: tuple[str, ...], max_time: int | None = None
) -> list[str]:
    """The command line of one run, its JSON report written to `report`."""
    args = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run", document_url]
    args += [f"--checks={','.join(CHECKS)}", f"--seed={seed}", f"--phases={','.join(phases)}"]
    if max_time is not None:
        args.append(f"--max-time={max_time}")
    return [*args, "--report=json", f"--report-json-path={report}"]


@dataclass(frozen=True)
class Report:
    """What a run's JSON report says."""

    cases: int
    seconds: float
    operations: tuple[int, int]  # tested, in the document
    phases: dict[str, str]  # phase -> status, for the phases that ran
    failures: list[Any]
    errors: list[Any]
    warnings: dict[str, Any]  # kind -> what was found, only the kinds that found something

    @classmethod
    def read(cls, path: Path) -> Report:
        summary: dict[str, Any] = json.loads(path.read_text())
        return cls(
            cases=summary["test_cases"]["generated"],
            seconds=summary["running_time"],
            operations=(summary["operations"]["tested"], summary["operations"]["total"]),
            phases={name: phase["status"] for name, phase in summary["phases"].items() if phase["status"] != "skip"},
            failures=summary["failures"],
            errors=summary["errors"],
            warnings={kind: found for kind, found in summary["warnings"].items() if found},
        )

    @property
    def clean(self) -> bool:
        return not (self.failures or self.errors or self.warnings)

    def __str__(self) -> str:
        found = f"{len(self.failures)} failure(s), {len(self.errors)} error(s), {len(self.warnings)} warning(s)"
        return f"{self.cases} cases in {self.seconds:.1f} s, " + ("nothing found" if self.clean else found)
