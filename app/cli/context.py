"""What every command works with, made once per command: the settings, this checkout's revisions, one event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

from alembic.config import Config

from app.migrations.revisions import Revisions, alembic_config
from app.settings import Settings

T = TypeVar("T")


@dataclass
class CommandContext:
    """One command's settings, revisions and event loop."""

    settings: Settings
    runner: asyncio.Runner

    def alembic(self) -> Config:
        """A fresh Alembic configuration for one Alembic command (commands may add attributes of their own)."""
        return alembic_config(self.settings, configure_logging=False)

    @cached_property
    def revisions(self) -> Revisions:
        return Revisions(self.alembic())

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run async work on the command's one event loop."""
        return self.runner.run(work)
