"""Login lockout per username or email: a wait after failures in a row, doubling up to a cap, the same for made-up
identifiers, shared through Redis."""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.http.app import create_app
from tests.support.accounts import PASSWORD, sign_up
from tests.support.databases import FAST_HASHING, Databases

Client = AsyncTestClient[Litestar]
WRONG = "wrong password"
LOCKOUT = {"login_lockout_attempts": 3, "login_lockout_seconds": 60, "login_lockout_max_seconds": 200}


class Clock:
    """A clock the test moves, in place of the lockout's."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def attempt(client: Client, identifier: str, password: str = WRONG) -> Any:
    return await client.post("/api/v1/login", json={"username": identifier, "password": password})


def answer(response: Any) -> tuple[int, str | None, str]:
    return response.status_code, response.headers.get("retry-after"), response.json().get("detail", "")


async def test_failures_in_a_row_lock_an_identifier_with_a_doubling_wait_alike_for_made_up_ones(
    pg: Databases, api_db: str
) -> None:
    app = create_app(pg.settings(api_db, **FAST_HASHING, **LOCKOUT))
    async with AsyncTestClient(app) as client:
        clock = app.state.lockout.clock = Clock()
        await sign_up(client, "alice")
        seen: dict[str, list[tuple[int, str | None, str]]] = {}
        for identifier, right in (("alice", "alice"), ("nobody", "nobody")):
            steps = [answer(await attempt(client, identifier.upper())) for _ in range(3)]  # case-folded
            steps.append(answer(await attempt(client, right, PASSWORD)))  # even the right password waits
            for waited in (61, 121):
                clock.now += waited
                steps += [answer(await attempt(client, identifier)), answer(await attempt(client, identifier))]
            seen[identifier] = steps
            clock.now += 201
        assert seen["alice"] == seen["nobody"]  # nothing tells the real account from the made-up one
        locked = "Too many failed logins for this username or email; retry in {} s"
        assert seen["alice"] == [
            (401, None, "Invalid username or password"),
            (401, None, "Invalid username or password"),
            (401, None, "Invalid username or password"),
            (429, "60", locked.format(60)),
            (401, None, "Invalid username or password"),  # the wait is over: one more try ...
            (429, "120", locked.format(120)),  # ... and a failure doubles it
            (401, None, "Invalid username or password"),
            (429, "200", locked.format(200)),  # up to the cap
        ]
        # Other identifiers are not held up, and a success clears the count.
        assert (await attempt(client, "alice@example.com", PASSWORD)).status_code == 200
        clock.now += 201
        assert (await attempt(client, "alice", PASSWORD)).status_code == 200
        codes = [(await attempt(client, "alice")).status_code for _ in range(4)]
        assert codes == [401, 401, 401, 429]


async def test_two_instances_count_failures_together_through_redis(pg: Databases, api_db: str, redis_url: str) -> None:
    settings = pg.settings(api_db, **FAST_HASHING, redis_url=redis_url)
    async with AsyncTestClient(create_app(settings)) as first, AsyncTestClient(create_app(settings)) as second:
        await sign_up(first, "alice")
        codes = [(await attempt(client, "alice")).status_code for client in (first, second) * 3]
        assert codes == [401, 401, 401, 401, 401, 429]  # five in a row, the default
        locked = await attempt(first, "alice", PASSWORD)
        assert (locked.status_code, locked.headers["retry-after"]) == (429, "60")
