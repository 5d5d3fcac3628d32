"""Login lockout per identifier: after N failed logins in a row, a wait that doubles up to a cap.

Counted by the identifier as typed (case-folded), whether or not an account has it, so the answers never tell a real
account from a made-up one. Each attempt is counted before its password is checked (a success clears the count):
attempts sent at once cannot slip past the limit while the first ones are still hashing. In memory for one instance,
or in Redis, where one script reads and writes the count atomically for every instance.
"""

from __future__ import annotations

import hashlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable

from redis.asyncio import Redis

from app.settings import Settings


def _key(identifier: str) -> str:
    # A digest, not the text: people type passwords into the username field, and this is kept for an hour.
    return hashlib.sha256(identifier.casefold().encode()).hexdigest()


class LoginLockout(ABC):
    """The policy (how many failures, how long a wait) and the count's store."""

    def __init__(self, settings: Settings) -> None:
        self.attempts = settings.login_lockout_attempts
        self.first_wait = settings.login_lockout_seconds
        self.max_wait = settings.login_lockout_max_seconds
        self.clock: Callable[[], float] = time.time

    @abstractmethod
    async def attempt(self, identifier: str) -> float:
        """Count an attempt and return 0, or the seconds to wait (and count nothing) while the identifier is locked."""

    @abstractmethod
    async def succeeded(self, identifier: str) -> None:
        """Forget the identifier's failures."""

    @abstractmethod
    async def close(self) -> None:
        """Let go of the store."""

    def locked_until(self, failures: int, now: float) -> float:
        """Until when `failures` in a row lock the identifier (`now` or earlier: not locked)."""
        if failures < self.attempts:
            return now
        return now + min(self.first_wait * 2.0 ** min(failures - self.attempts, 64), self.max_wait)


class MemoryLockout(LoginLockout):
    """The counts of one instance; forgotten `max_wait` seconds after the last attempt or the end of a lock."""

    SWEEP_EVERY = 1024

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._entries: dict[str, tuple[int, float, float]] = {}  # key: (failures, locked until, forget at)
        self._writes = 0

    async def attempt(self, identifier: str) -> float:
        # No await between the read and the write: on one event loop this is atomic.
        key, now = _key(identifier), self.clock()
        failures, until, forget_at = self._entries.get(key, (0, 0.0, 0.0))
        if forget_at <= now:
            failures, until = 0, 0.0
        if now < until:
            return until - now
        failures += 1
        until = self.locked_until(failures, now)
        self._entries[key] = (failures, until, max(until, now) + self.max_wait)
        self._sweep(now)
        return 0.0

    async def succeeded(self, identifier: str) -> None:
        self._entries.pop(_key(identifier), None)

    async def close(self) -> None:
        self._entries.clear()

    def _sweep(self, now: float) -> None:
        # Made-up identifiers must not grow memory for ever: drop the forgotten ones now and then.
        self._writes += 1
        if self._writes % self.SWEEP_EVERY == 0:
            self._entries = {key: entry for key, entry in self._entries.items() if entry[2] > now}


# KEYS[1]: the identifier's hash; ARGV: now, attempts, first wait, max wait (seconds). Returns the wait, as text
# (Redis turns a Lua number into an integer).
_ATTEMPT = """
local now, attempts = tonumber(ARGV[1]), tonumber(ARGV[2])
local first_wait, max_wait = tonumber(ARGV[3]), tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 'failures', 'until')
local failures, locked_until = tonumber(state[1]) or 0, tonumber(state[2]) or 0
if now < locked_until then
    return tostring(locked_until - now)
end
failures = failures + 1
if failures >= attempts then
    locked_until = now + math.min(first_wait * 2 ^ math.min(failures - attempts, 64), max_wait)
end
redis.call('HSET', KEYS[1], 'failures', failures, 'until', locked_until)
redis.call('PEXPIRE', KEYS[1], math.ceil((math.max(locked_until, now) - now + max_wait) * 1000))
return '0'
"""


class RedisLockout(LoginLockout):
    """The counts every instance shares, in Redis; each expires `max_wait` seconds after its last change."""

    def __init__(self, settings: Settings, url: str) -> None:
        super().__init__(settings)
        self._redis: Redis = Redis.from_url(url)
        self._script = self._redis.register_script(_ATTEMPT)
        self._prefix = f"{settings.api_db_name}:login-lockout:"

    async def attempt(self, identifier: str) -> float:
        # The instance's clock, not Redis's: the same for the memory store, and a test can move it.
        arguments = [self.clock(), self.attempts, self.first_wait, self.max_wait]
        return float(await self._script(keys=[self._prefix + _key(identifier)], args=arguments))

    async def succeeded(self, identifier: str) -> None:
        await self._redis.delete(self._prefix + _key(identifier))

    async def close(self) -> None:
        await self._redis.aclose()


def login_lockout(settings: Settings) -> LoginLockout:
    """In memory for one instance; in Redis when REDIS_URL is set, so that every instance counts together."""
    if settings.redis_url:
        return RedisLockout(settings, settings.redis_url)
    return MemoryLockout(settings)
