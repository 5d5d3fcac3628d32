"""Three instances behind HAProxy over PgBouncer, sharing Redis: each restarted in turn under load, no request fails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.balancer import Balancer, Instance, haproxy, production_env, steady_load
from tests.support.databases import Databases
from tests.support.pgbouncer import Bouncer

pytestmark = pytest.mark.slow  # a balancer and three instances

INSTANCES = 3
DRAIN_SECONDS = 2.0


@pytest.fixture
def balancer(tmp_path: Path) -> Iterator[tuple[Balancer, list[int]]]:
    with haproxy(tmp_path, INSTANCES) as running:
        yield running


async def test_each_instance_restarted_in_turn_fails_no_request(
    pg: Databases, api_db: str, pgbouncer: Bouncer, balancer: tuple[Balancer, list[int]], tmp_path: Path
) -> None:
    lb, ports = balancer
    env = production_env(pg, api_db, pgbouncer, drain_seconds=DRAIN_SECONDS)
    instances = [Instance(port, env, tmp_path / f"instance{n}.log") for n, port in enumerate(ports)]
    try:
        for instance in instances:
            instance.start()
        for n in range(INSTANCES):
            await lb.wait_until(f"i{n}", "UP", instances[n])
        async with steady_load(lb) as load:
            for n, instance in enumerate(instances):
                before = sum(load.answers.values())
                assert await instance.stop() == 0, instance.log.read_text()
                await lb.wait_until(f"i{n}", "DOWN", instance)
                instance.start()
                await lb.wait_until(f"i{n}", "UP", instance)
                assert sum(load.answers.values()) > before, "no request went through while an instance restarted"
    finally:
        for instance in instances:
            instance.kill()
    print(f"rolling restart: {dict(load.answers)}")
    said = [
        line for i in instances for line in i.log.read_text().splitlines() if "unavailable" in line or "rror" in line
    ]
    assert set(load.answers) == {"register 201", "me 200"}, (load.answers, said)
    assert load.answers["register 201"] >= 10, load.answers
    assert load.answers["me 200"] >= 100, load.answers
