"""Argon2id password hashing off the event loop, a bounded number at a time."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from app.errors import HashingOverloadedError
from app.settings import Settings

T = TypeVar("T")


def lower_thread_priority() -> None:
    # Argon2's lane threads inherit this, so the event loop wins the CPU when both want it.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def password_hasher(settings: Settings) -> PasswordHasher:
    """Argon2id with the configured cost."""
    return PasswordHasher(
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism,
    )


def hash_worker_count(settings: Settings) -> int:
    """How many hashes a process runs at once: HASH_WORKERS, else one per core."""
    return settings.hash_workers or os.cpu_count() or 1


class PasswordHashing:
    """Hashes passwords on one worker thread per core; beyond the queue limit it refuses instead of piling up."""

    def __init__(self, settings: Settings) -> None:
        self.hasher = password_hasher(settings)
        self.workers = hash_worker_count(settings)
        self.queue_seconds = settings.hash_queue_seconds
        # One worker per core: Argon2's lanes already spread each hash over the cores; more workers add only memory.
        self._executor = ThreadPoolExecutor(
            self.workers, thread_name_prefix="argon2", initializer=lower_thread_priority
        )
        self.seconds_per_hash, self.dummy_hash = self._measure()
        self.pending = 0

    def _measure(self) -> tuple[float, str]:
        # One hash per worker at once, as under load: Argon2's lanes then share the cores, and a lone hash
        # would make the queue limit and Retry-After too optimistic.
        started = time.perf_counter()
        hashes = [self._executor.submit(self.hasher.hash, "calibration password") for _ in range(self.workers)]
        dummy, *_ = [future.result() for future in hashes]
        return max(time.perf_counter() - started, 1e-4), dummy

    @property
    def queue_limit(self) -> int:
        """How many hashes may wait or run before new ones are refused (about `hash_queue_seconds` of work)."""
        return max(self.workers, int(self.queue_seconds * self.workers / self.seconds_per_hash))

    async def hash(self, password: str) -> str:
        """The Argon2id hash of `password`; raises HashingOverloadedError when the queue is full."""
        return await self._run(self.hasher.hash, password)

    async def verify(self, hashed: str | None, password: str) -> bool:
        """Whether `password` matches `hashed`; with no hash, checks a dummy so an unknown user costs the same."""
        return await self._run(self._verify, hashed, password)

    def needs_rehash(self, hashed: str) -> bool:
        """True when `hashed` was made with other parameters than the current ones."""
        return self.hasher.check_needs_rehash(hashed)

    def _verify(self, hashed: str | None, password: str) -> bool:
        try:
            return self.hasher.verify(hashed or self.dummy_hash, password) and hashed is not None
        except (VerificationError, InvalidHashError):
            return False

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        if self.pending >= self.queue_limit:
            raise HashingOverloadedError(math.ceil(self.pending * self.seconds_per_hash / self.workers))
        self.pending += 1
        try:
            # A waiting call is only a queued function: it holds no hash memory until a worker takes it.
            return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)
        finally:
            self.pending -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
