"""What an upgrade applies now, and what waits for the rollout.

Expand revisions apply at once: the running release survives them. A contract revision applies only when no live
instance runs a release older than it (one whose code does not have it); until then an upgrade applies everything
before it and stops there, and the next `just migrate` after the rollout applies it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from app.errors import SetupError
from app.migrations.lineage import SchemaState, listed, schema_state
from app.migrations.phases import CONTRACT
from app.migrations.revisions import Revisions

HEAD_SPECS = frozenset({"head", "heads"})


@dataclass(frozen=True)
class Instance:
    """A live instance of the service: the release it runs (its head revisions) and where."""

    heads: tuple[str, ...]
    host: str
    pid: int

    def __str__(self) -> str:
        return f"release at {'+'.join(self.heads) or 'no revision'} on {self.host} (pid {self.pid})"


# Reads the live instances on the migration's connection (the instance registry); none before it exists.
LiveInstances = Callable[[sa.Connection], Sequence[Instance]]


@dataclass(frozen=True)
class UpgradePlan:
    """An upgrade's steps: those it applies now, and the contract revisions it leaves for after the rollout."""

    state: SchemaState
    apply: tuple[str, ...] = ()
    waiting: tuple[str, ...] = ()
    blockers: tuple[Instance, ...] = ()
    expand_only: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def target(self) -> str | None:
        """The revision to upgrade to; None when there is nothing to apply now."""
        return self.apply[-1] if self.apply else None

    def waiting_message(self) -> str | None:
        """What was left for later and why, in the words an operator needs; None when nothing waits."""
        if not self.waiting:
            return None
        waiting = f"Contract {listed(self.waiting)}"
        if self.expand_only:
            return f"{waiting} left for after the rollout (--expand-only): then run `just migrate`."
        instances = "; ".join(str(instance) for instance in self.blockers)
        return (
            f"{waiting} waits for the rollout: older instances still run ({instances}). Run `just migrate` again "
            "once they are gone (or `just migrate --force-contract`)."
        )


def plan_upgrade(
    connection: sa.Connection,
    revisions: Revisions,
    destination: str = "heads",
    *,
    live_instances: LiveInstances = lambda connection: (),
    expand_only: bool = False,
    force_contract: bool = False,
) -> UpgradePlan:
    """Plan an upgrade to `destination` (head, or a revision id) of the connected database; changes nothing."""
    state = schema_state(connection, revisions)
    if state.newer:
        return UpgradePlan(state)  # a newer release's schema: nothing of this checkout's to apply
    wanted = revisions.heads if destination in HEAD_SPECS else {_resolved(revisions, destination)}
    steps = [revision for revision, _ in state.pending if revision in revisions.ancestry(wanted)]
    instances: Sequence[Instance] | None = None
    for index, revision in enumerate(steps):
        if revisions.phases[revision] != CONTRACT or force_contract:
            continue
        if expand_only:
            return UpgradePlan(state, tuple(steps[:index]), tuple(steps[index:]), expand_only=True)
        if instances is None:
            instances = live_instances(connection)
        older = tuple(instance for instance in instances if runs_without(instance, revision, revisions))
        if older:
            return UpgradePlan(state, tuple(steps[:index]), tuple(steps[index:]), older)
    return UpgradePlan(state, tuple(steps))


def apply_upgrade(
    connection: sa.Connection,
    config: Config,
    revisions: Revisions,
    destination: str = "heads",
    *,
    before: Callable[[UpgradePlan], object] = lambda plan: None,
    **options: Any,
) -> UpgradePlan:
    """Plan, then upgrade the connected database as far as the plan goes; call it holding the migration lock.

    `before` runs between the two (the backup); `options` go to `plan_upgrade`. With nothing to apply, env.py still
    runs: it rebuilds INVALID indexes and records checksums and lineage.
    """
    plan = plan_upgrade(connection, revisions, destination, **options)
    if plan.state.newer or (plan.target is None and len(plan.state.current) > 1):
        return plan  # nothing of this checkout's to apply; several heads: "heads" could apply what waits
    before(plan)
    config.attributes.update(connection=connection, planned=True, rebuild_invalid_indexes=True)
    command.upgrade(config, plan.target or next(iter(plan.state.current), "heads"))
    return plan


def _resolved(revisions: Revisions, destination: str) -> str:
    try:
        script = revisions.script.get_revision(destination)
    except Exception as exc:
        raise SetupError(f"no revision '{destination}' in this checkout: give a revision id or head") from exc
    if script is None:
        raise SetupError(f"no revision '{destination}' in this checkout: give a revision id or head")
    return script.revision


def runs_without(instance: Instance, revision: str, revisions: Revisions) -> bool:
    """True when the instance's release lacks `revision`: its heads are all this checkout's and none builds on it.

    Heads this checkout does not have belong to a newer release, which has every revision this one has.
    """
    if not instance.heads:
        return True
    if any(head not in revisions.known for head in instance.heads):
        return False
    return revision not in revisions.ancestry(instance.heads)
