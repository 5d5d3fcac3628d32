"""Three releases rolled out behind HAProxy over PgBouncer under steady load: N+1 adds a column (expand), N+2 stops
using one and drops it (contract). Each migrate runs while the previous release serves; no request fails."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.balancer import Balancer, Instance, as_environment, haproxy, production_env, steady_load
from tests.support.databases import Databases
from tests.support.pgbouncer import Bouncer, through
from tests.support.releases import Releases
from tests.support.revisions import ADD_NICKNAME, DROP_PHONE

pytestmark = pytest.mark.slow  # a balancer, PgBouncer and three releases' instances

MODELS = "app/db/models.py"
PHONE = "    phone_number: str | None = Field(default=None, max_length=20)\n"
NICKNAME = "    nickname: str | None = Field(default=None, max_length=60)\n"
DRAIN_SECONDS = 1.0


async def migrate(release: Path, env: dict[str, str]) -> str:
    """`just migrate` of a release, on the server itself, as a deploy step runs it; what it said. Off the event loop:
    the load goes on meanwhile."""
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "app", "migrate"],
        cwd=release,
        env={**env, "PYTHONPATH": str(release)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


async def replace(balancer: Balancer, server: str, old: Instance, new: Instance) -> None:
    """A rolling step: the old instance drains and stops, the new one starts on its port and gets traffic."""
    assert await old.stop() == 0, old.log.read_text()
    await balancer.wait_until(server, "DOWN", old)
    new.start()
    await balancer.wait_until(server, "UP", new)


async def test_releases_roll_out_across_expand_and_contract_without_a_failed_request(
    pg: Databases, api_db: str, pgbouncer: Bouncer, tmp_path: Path
) -> None:
    releases = Releases(tmp_path / "releases")
    n1 = releases.commit(
        "N+1: a nickname column",
        {"alembic/versions/0900_add_nickname.py": ADD_NICKNAME},
        {MODELS: (PHONE, PHONE + NICKNAME)},
    )
    n2 = releases.commit(
        "N+2: phone_number no longer used, then dropped",
        {"alembic/versions/0901_drop_phone_number.py": DROP_PHONE},
        {MODELS: (PHONE, "")},
    )
    code = {
        "N": releases.checkout(releases.n, "n"),
        "N+1": releases.checkout(n1, "n1"),
        "N+2": releases.checkout(n2, "n2"),
    }
    serving = production_env(pg, api_db, pgbouncer, drain_seconds=DRAIN_SECONDS)
    migrating = {**serving, **as_environment(through(pgbouncer, pg, direct=True))}

    async def phone_column() -> bool:
        query = "SELECT 1 FROM information_schema.columns WHERE table_name = 'users' AND column_name = 'phone_number'"
        return bool(await pg.fetch(api_db, query))

    with haproxy(tmp_path, 2) as (lb, ports):
        started: list[Instance] = []

        def instance(release: str, slot: int) -> Instance:
            log = tmp_path / f"{release}-{slot}-{len(started)}.log"
            made = Instance(ports[slot], serving, log, cwd=code[release])
            started.append(made)
            return made

        try:
            at = [instance("N", 0), instance("N", 1)]
            for slot, running in enumerate(at):
                running.start()
                await lb.wait_until(f"i{slot}", "UP", running)
            async with steady_load(lb) as load:
                # N+1's expand migration while N serves: N stays ready on the schema ahead of it.
                said = await migrate(code["N+1"], migrating)
                assert f"API database '{api_db}': 0900 (head)" in said, said
                assert lb.states() == {"i0": "UP", "i1": "UP"}
                # An N instance restarted now (a crash, a rescheduled pod) starts on that schema and gets traffic.
                restarted = instance("N", 0)
                await replace(lb, "i0", at[0], restarted)
                at[0] = restarted
                for slot in (0, 1):
                    new = instance("N+1", slot)
                    await replace(lb, f"i{slot}", at[slot], new)
                    at[slot] = new
                # N+2's migration while N+1 serves: the contract revision waits for N+1's instances.
                said = await migrate(code["N+2"], migrating)
                waiting = "Contract revision 0901 waits for the rollout: older instances still run (release at 0900"
                assert waiting in said, said
                assert await phone_column()
                for slot in (0, 1):
                    new = instance("N+2", slot)
                    await replace(lb, f"i{slot}", at[slot], new)  # ready on a schema that still has the column
                    at[slot] = new
                # N+1 is gone: the contract revision applies under N+2, which no longer uses the column.
                said = await migrate(code["N+2"], migrating)
                assert f"API database '{api_db}': 0901 (head)" in said, said
                assert not await phone_column()
                assert lb.states() == {"i0": "UP", "i1": "UP"}
        finally:
            for each in started:
                each.kill()
    print(f"rollout across N, N+1, N+2: {dict(load.answers)}")
    assert set(load.answers) == {"register 201", "me 200"}, load.answers
    assert load.answers["register 201"] >= 20, load.answers
    assert load.answers["me 200"] >= 200, load.answers
