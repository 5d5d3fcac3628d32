"""Password hashing: bounded, verifiable, and aware of outdated parameters."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest
from argon2 import PasswordHasher, extract_parameters
from argon2.profiles import RFC_9106_LOW_MEMORY

from app.errors import HashingOverloadedError
from app.kit.passwords import PasswordHashing
from app.settings import Settings

FAST = {"argon2_memory_kib": 1024, "argon2_time_cost": 1, "argon2_parallelism": 1}


class CountingHasher(PasswordHasher):
    """Records how many hashes run at the same moment."""

    def __init__(self, time_cost: int = 40) -> None:
        super().__init__(time_cost=time_cost, memory_cost=1024, parallelism=1)
        self.running = self.peak = 0
        self._lock = threading.Lock()

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        with self._lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            self.starting()
            return super().hash(password, salt=salt)
        finally:
            with self._lock:
                self.running -= 1

    def starting(self) -> None:
        """Called on the worker thread as each hash starts."""


class MeetingHasher(CountingHasher):
    """Each hash waits until `parties` hashes are running together: fewer workers than that break the barrier."""

    def __init__(self, parties: int) -> None:
        super().__init__(time_cost=1)
        self.barrier = threading.Barrier(parties, timeout=10)

    def starting(self) -> None:
        self.barrier.wait()


async def test_no_more_hashes_run_at_once_than_workers() -> None:
    hashing = PasswordHashing(Settings.model_validate({**FAST, "hash_workers": 2}))
    counting = hashing.hasher = CountingHasher()
    try:
        await asyncio.gather(*(hashing.hash(f"password {i}") for i in range(8)))
    finally:
        hashing.close()
    assert counting.peak == 2


async def test_beyond_the_queue_limit_hashing_is_refused() -> None:
    hashing = PasswordHashing(Settings.model_validate({**FAST, "hash_workers": 1, "hash_queue_seconds": 1e-9}))
    hashing.hasher = CountingHasher()
    try:
        results = await asyncio.gather(*(hashing.hash(f"p{i}") for i in range(4)), return_exceptions=True)
    finally:
        hashing.close()
    refused = [r for r in results if isinstance(r, HashingOverloadedError)]
    assert len(refused) == 3
    assert all(r.retry_after >= 1 for r in refused)


async def test_verify_and_rehash() -> None:
    hashing = PasswordHashing(Settings.model_validate(FAST))
    try:
        hashed = await hashing.hash("correct horse")
        assert await hashing.verify(hashed, "correct horse")
        assert not await hashing.verify(hashed, "wrong horse")
        assert not await hashing.verify(None, "calibration password")  # the dummy hash never lets anyone in
        assert not await hashing.verify("not a hash", "correct horse")
        assert not hashing.needs_rehash(hashed)
        assert hashing.needs_rehash(PasswordHasher(time_cost=2, memory_cost=512, parallelism=1).hash("x"))
    finally:
        hashing.close()


async def test_passwords_are_hashed_with_argon2s_rfc_9106_low_memory_profile_by_default() -> None:
    hashing = PasswordHashing(Settings.model_validate({"hash_workers": 1}))
    try:
        hashed = await hashing.hash("correct horse")
    finally:
        hashing.close()
    parameters = extract_parameters(hashed)
    assert parameters == RFC_9106_LOW_MEMORY
    assert (parameters.time_cost, parameters.memory_cost, parameters.parallelism) == (3, 65536, 4)


async def test_with_no_worker_count_set_as_many_hashes_run_at_once_as_there_are_cores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cores = (os.cpu_count() or 1) + 1  # not this machine's count: the pool must ask, not assume
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    hashing = PasswordHashing(Settings.model_validate({**FAST, "hash_workers": 0}))
    meeting = hashing.hasher = MeetingHasher(cores)
    try:
        await asyncio.gather(*(hashing.hash(f"password {i}") for i in range(2 * cores)))
    finally:
        hashing.close()
    assert hashing.workers == cores
    assert meeting.peak == cores
