"""`just mlflow-upgrade plan | rehearse | apply`: MLflow's schema upgrade, the only command that writes its database."""

from __future__ import annotations

import argparse
import importlib.metadata
from pathlib import Path

from app.cli.context import CommandContext
from app.cli.data import confirmed
from app.errors import SetupError
from app.mlflow.store import MlflowStore, locate_store, require_mlflow
from app.mlflow.upgrade import Plan, apply, plan, rehearse, restore

PLAN, REHEARSE, APPLY, RESTORE = "plan", "rehearse", "apply", "restore"


def _store(ctx: CommandContext) -> MlflowStore | None:
    require_mlflow()
    store = locate_store(ctx.settings)
    if store is None:
        print(
            f"MLflow's database '{ctx.settings.postgres_db}' holds no tracking store yet: MLflow's server makes one, "
            "at its head, on its first start. Nothing to upgrade."
        )
    return store


def _shown(path: Path) -> str:
    """`path` relative to the working directory when it lies under it."""
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def print_plan(found: Plan) -> None:
    version = importlib.metadata.version("mlflow")
    if not found.revisions:
        print(f"MLflow's {found.store}: at {found.current}, the head of MLflow {version}. Nothing to upgrade.")
        return
    print(
        f"MLflow's {found.store}: at {found.current}; MLflow {version}'s head is {found.head}: "
        f"{len(found.revisions)} revision(s) pending, applied in this order:"
    )
    for planned in found.revisions:
        print(f"\n  {planned.revision}  {planned.description}")
        if planned.rendered.needs_live_data:
            print(
                "    needs the live store: offline rendering stops part-way "
                f"({planned.rendered.needs_live_data}); the SQL up to there follows, and `just mlflow-upgrade "
                "rehearse` runs the whole revision on a copy"
            )
        statements = [line for line in planned.rendered.sql.splitlines() if line.strip() and not line.startswith("--")]
        for line in statements:
            print(f"    | {line}")
        for finding in planned.findings:
            print(f"    squawk: {finding}")
        for table, stats in planned.tables.items():
            shown = "new" if stats is None else f"{stats.rows} rows, {stats.bytes / 2**20:.1f} MiB"
            print(f"    table {table}: {shown}")
    print(
        "\nNothing was changed. `just mlflow-upgrade rehearse` runs it on a copy; `just mlflow-upgrade apply` runs it "
        "on the store, after a backup."
    )


def cmd_mlflow_upgrade(args: argparse.Namespace, ctx: CommandContext) -> int:
    if args.dump is not None and args.step != RESTORE:
        raise SetupError(f"{args.step} takes no file; only `restore` does")
    store = _store(ctx)
    if store is None:
        return 0
    if args.step == PLAN:
        print_plan(plan(store))
        return 0
    if args.step == REHEARSE:
        print(f"Rehearsing MLflow's upgrade on a copy of its {store}:")
        run = rehearse(store, ctx.settings, print)
        if run.failed:
            raise SetupError(
                f"the rehearsal failed at {run.failed.revision} ({run.failed.description}): {run.failed.error}. "
                "The store itself is untouched"
            )
        total = sum(step.seconds for step in run.steps)
        print(f"The copy reached head in {total:.2f} s and passed every check; the store itself is untouched.")
        return 0
    if args.step == RESTORE:
        return _restore(store, args, ctx)
    question = f"Upgrade MLflow's {store} (a backup first)?"
    if not args.yes and not confirmed(question, "apply changes MLflow's database", "add --yes"):
        print("Nothing changed.")
        return 1
    print(f"Upgrading MLflow's {store}:")
    applied = apply(store, ctx.settings, print, online=args.online)
    if applied is None:
        print("The store is at MLflow's head already. Nothing to upgrade.")
        return 0
    upgrade = sum(step.seconds for step in applied.run.steps)
    print(
        f"MLflow's store is at head ({applied.run.steps[-1].revision}): {len(applied.run.steps)} revision(s) in "
        f"{upgrade:.2f} s, {applied.seconds:.1f} s with the backup and its proof "
        f"({_shown(applied.backup)}). MLflow's server starts on it."
    )
    return 0


def _restore(store: MlflowStore, args: argparse.Namespace, ctx: CommandContext) -> int:
    if args.dump is None:
        raise SetupError("name the backup to put back: `just mlflow-upgrade restore BACKUP_DIR/mlflow-....dump`")
    dump = Path(args.dump)
    question = f"Put MLflow's {store} back as {dump} holds it (a backup of it as it is now first)?"
    if not args.yes and not confirmed(question, "restore replaces MLflow's tables", "add --yes"):
        print("Nothing changed.")
        return 1
    now = restore(store, ctx.settings, dump, print)
    print(
        f"MLflow's {store} is as {_shown(dump)} holds it (checked against a copy restored from it); as it was "
        f"before: {_shown(now)}. Start the MLflow release that matches its revision."
    )
    return 0
