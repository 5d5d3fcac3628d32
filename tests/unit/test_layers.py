"""The house rules on imports: a layer uses only those below it, and tests share helpers through tests/support."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.settings import PROJECT_ROOT

# What each part of `app` may import from `app`, besides itself. Foundations (settings, errors, the role names, the
# account rules) import nothing of the app; each layer above uses only those below it; only the CLI starts things.
FOUNDATIONS = {"app.settings", "app.errors", "app.roles", "app.account_rules"}
MAY_IMPORT = {
    **{name: set[str]() for name in FOUNDATIONS},
    "app.db": FOUNDATIONS,
    "app.kit": FOUNDATIONS,
    "app.migrations": FOUNDATIONS | {"app.db"},
    "app.repositories": FOUNDATIONS | {"app.db", "app.migrations"},
    "app.services": FOUNDATIONS | {"app.db", "app.kit", "app.migrations", "app.repositories"},
    "app.http": FOUNDATIONS | {"app.db", "app.kit", "app.migrations", "app.repositories", "app.services"},
    # MLflow's store and its guarded upgrade: beside the API's own migrations, using their tools.
    "app.mlflow": FOUNDATIONS | {"app.db", "app.migrations"},
    "app.cli": FOUNDATIONS
    | {"app.db", "app.kit", "app.migrations", "app.repositories", "app.services", "app.http", "app.mlflow"},
    "app.__main__": {"app.cli"},
    "app": set(),
}


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """Each module `path` imports, absolute, with the line it does so on."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name


def module_name(path: Path, base: Path) -> str:
    parts = path.relative_to(base).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    """`app.http.routes.me` is in layer `app.http`; `app.settings` is a layer of its own."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "app" else parts[0]


def layering_violations(base: Path, rules: dict[str, set[str]]) -> list[str]:
    """Every import in `base`/app of an app module that its layer may not use, as `file:line: a imports b`."""
    found = []
    for path in sorted((base / "app").rglob("*.py")):
        shown, layer = path.relative_to(base), layer_of(module_name(path, base))
        allowed = rules.get(layer)
        if allowed is None:
            found.append(f"{shown}: layer {layer} has no rule in MAY_IMPORT")
            continue
        for line, module in imported_modules(path):
            target = layer_of(module)
            if module.startswith("app.") and target != layer and target not in allowed:
                found.append(f"{shown}:{line}: {layer} imports {module}")
    return found


def test_each_layer_imports_only_the_layers_below_it() -> None:
    assert layering_violations(PROJECT_ROOT, MAY_IMPORT) == []


def test_migrations_env_uses_no_service_code() -> None:
    env = PROJECT_ROOT / "alembic" / "env.py"
    used = {layer_of(module) for _, module in imported_modules(env) if module.startswith("app.")}
    assert used <= FOUNDATIONS | {"app.db", "app.migrations"}


def test_no_test_module_imports_another() -> None:
    tests = PROJECT_ROOT / "tests"
    found = [
        f"{path.relative_to(PROJECT_ROOT)}:{line}: {module}"
        for path in sorted(tests.rglob("*.py"))
        for line, module in imported_modules(path)
        if module.startswith("tests.") and (module.rsplit(".", 1)[-1].startswith("test_") or module == "tests.conftest")
    ]
    assert found == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from app.http.app import create_app\n", "app/db/engine.py:2: app.db imports app.http.app"),
        ("import app.cli\n", "app/db/engine.py:2: app.db imports app.cli"),
        ("from app.db.models import DBUser\n", None),
    ],
)
def test_the_rule_fails_on_an_upward_import(tmp_path: Path, source: str, expected: str | None) -> None:
    """The check is not vacuous: a lower layer reaching up is reported, with its file and line."""
    (tmp_path / "app" / "db").mkdir(parents=True)
    (tmp_path / "app" / "db" / "engine.py").write_text(f"from app.settings import Settings\n{source}")
    assert layering_violations(tmp_path, MAY_IMPORT) == ([expected] if expected else [])
