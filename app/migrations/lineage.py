"""Where the database stands against this checkout's revisions, newer releases' revisions included.

A rollout runs the previous release's code on the next release's schema for minutes. That release lacks the newer
revision files, but the database records each applied revision's parents and phase (beside its checksum), so it
tells this project's newer revisions from another project's, and whether it can run on them: ahead through expand
revisions, or behind with only contract revisions pending.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from app.migrations.checksums import CHECKSUM_TABLE, has_lineage
from app.migrations.phases import CONTRACT, EXPAND, Phase
from app.migrations.revisions import Revisions, database_revisions


@dataclass(frozen=True)
class Recorded:
    """An applied revision as the database recorded it."""

    revision: str
    parents: tuple[str, ...]
    phase: str


def recorded_lineage(connection: sa.Connection) -> dict[str, Recorded]:
    """Every applied revision's recorded parents and phase; empty where nothing was recorded."""
    if not has_lineage(connection):
        return {}
    rows = connection.execute(sa.text(f"SELECT revision, parents, phase FROM {CHECKSUM_TABLE} WHERE phase IS NOT NULL"))
    return {row.revision: Recorded(row.revision, tuple(row.parents.split()), row.phase) for row in rows}


@dataclass(frozen=True)
class Trace:
    """The database's revisions followed back to this checkout's."""

    newer: tuple[Recorded, ...]  # applied, recorded as this project's, not in this checkout: newest first
    foreign: tuple[str, ...]  # applied, neither in this checkout nor recorded: another project's
    known_heads: frozenset[str]  # the newest applied revisions this checkout has


def trace(connection: sa.Connection, current: Collection[str], known: Collection[str]) -> Trace:
    """Follow each applied revision this checkout lacks back through the recorded lineage to one it has."""
    lineage = recorded_lineage(connection) if any(revision not in known for revision in current) else {}
    newer: dict[str, Recorded] = {}
    foreign: list[str] = []
    known_heads: set[str] = set()
    for top in sorted(current):
        found, stack, seen = [], [top], set()
        while stack:
            revision = stack.pop()
            if revision in seen:
                continue
            seen.add(revision)
            if revision in known:
                known_heads.add(revision)
            elif (entry := lineage.get(revision)) is not None and entry.parents:
                found.append(entry)
                stack.extend(entry.parents)
            else:
                foreign.append(top)  # its history leaves this project's: another project's revision
                break
        else:
            newer.update((entry.revision, entry) for entry in found)
    return Trace(tuple(newer.values()), tuple(foreign), frozenset(known_heads))


@dataclass(frozen=True)
class SchemaState:
    """The database's revisions against this checkout's: what is applied, newer, pending."""

    current: frozenset[str]
    heads: frozenset[str]
    newer: tuple[Recorded, ...]
    foreign: tuple[str, ...]
    known_heads: frozenset[str]
    pending: tuple[tuple[str, Phase], ...]  # this checkout's revisions not applied, oldest first

    @property
    def at_head(self) -> bool:
        return self.current == self.heads

    def pending_in(self, phase: Phase) -> list[str]:
        return [revision for revision, pending_phase in self.pending if pending_phase == phase]

    @property
    def newer_contract(self) -> list[str]:
        return [entry.revision for entry in self.newer if entry.phase != EXPAND]

    def problem(self) -> str | None:
        """Why this release's code cannot run on the database as it is; None when it can."""
        if self.foreign:
            return f"revision {', '.join(self.foreign)} is not one of this project's migrations"
        if not self.current:
            return "run `just migrate` first"
        if expand := self.pending_in(EXPAND):
            return f"{listed(expand)} of this release {_are(expand)} not applied; run `just migrate` first"
        if contract := self.newer_contract:
            return (
                f"a newer release's contract {listed(contract)} {_are(contract)} applied: it removed or changed what "
                "this release's code may use; run that release"
            )
        return None

    def describe(self) -> str:
        """Where the database stands, in one line: at head, ahead through expand, behind by contract, or not fit."""
        shown = ", ".join(sorted(self.current)) or "no revision"
        heads = ", ".join(sorted(self.heads))
        if self.at_head:
            return f"{shown} (head)"
        if problem := self.problem():
            return f"{shown}, not at this release's head ({heads}): {problem}"
        notes = []
        if self.newer:
            newer = listed([entry.revision for entry in reversed(self.newer)])
            notes.append(f"ahead of this release's head {heads} through a newer release's expand {newer}")
        if contract := self.pending_in(CONTRACT):
            notes.append(f"contract {listed(contract)} pending: applied once no older release runs")
        return f"{shown}, {'; '.join(notes)}"


def listed(revisions: Sequence[str]) -> str:
    """`revision 0006`, or `revisions 0006, 0007`."""
    return f"revision{'s' if len(revisions) > 1 else ''} {', '.join(revisions)}"


def _are(revisions: Sequence[str]) -> str:
    return "are" if len(revisions) > 1 else "is"


def schema_state(connection: sa.Connection, revisions: Revisions) -> SchemaState:
    """Read where the connected database stands against this checkout's revisions."""
    current = database_revisions(connection)
    traced = trace(connection, current, revisions.known)
    applied = revisions.ancestry(traced.known_heads)
    pending = tuple(
        (revision, revisions.phases[revision]) for revision in revisions.upgrade_order if revision not in applied
    )
    return SchemaState(current, revisions.heads, traced.newer, traced.foreign, traced.known_heads, pending)
