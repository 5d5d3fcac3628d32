"""A release on Kubernetes, rehearsed on this machine from the rendered example overlay: the expand Job's command,
two API pods' commands with their rendered environment (the Services' names mapped to this machine's ports), probed
at the manifest's periods and thresholds with the balancer sending traffic to the ready ones only, a rolling update
to the next release within the manifest's surge and grace period, then the contract Job. No request fails."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from app.settings import Settings
from tests.support.balancer import haproxy, steady_load
from tests.support.databases import Databases
from tests.support.kubelet import Pod, rolling_update, wait_available
from tests.support.kubernetes import EXAMPLE, IDLE_MIB, Manifests, Object, quantity_mib, render
from tests.support.live_server import free_port
from tests.support.pgbouncer import Bouncer
from tests.support.releases import Releases
from tests.support.revisions import ADD_NICKNAME, DROP_PHONE
from tests.support.tools import shared_redis

pytestmark = pytest.mark.slow  # two releases' pods, a balancer, PgBouncer, the Jobs

MODELS = "app/db/models.py"
PHONE = "    phone_number: str | None = Field(default=None, max_length=20)\n"
NICKNAME = "    nickname: str | None = Field(default=None, max_length=60)\n"
RATE_LIMIT_DEFAULT = Settings.model_fields["rate_limit_per_minute"].default


class Sink:
    """An SMTP server that takes every mail (the overlay's SMTP_HOST, on this machine)."""

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        return "250 OK"


@pytest.fixture
def smtp_port() -> Iterator[int]:
    port = free_port()
    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    yield port
    controller.stop()


@dataclass
class Cluster:
    """The Services of the overlay, on this machine: what each rendered name and port becomes."""

    manifests: Manifests
    pg: Databases
    db: str
    bouncer: Bouncer
    smtp_port: int
    backups: Path
    mlflow_db: str

    @property
    def services(self) -> set[str]:
        return {each["metadata"]["name"] for each in self.manifests.of_kind("Service")}

    def env(self, container: Object) -> dict[str, str]:
        """The container's rendered environment, with the Services' names (and the API's credentials on the
        cluster's server) replaced by this machine's; every other value as rendered."""
        rendered = self.manifests.env(container)
        assert None not in rendered.values(), rendered
        env = {name: str(value) for name, value in rendered.items()}
        assert env["API_DB_HOST"] in self.services
        assert env["REDIS_URL"].split("/")[2].split(":")[0] in self.services
        env |= {
            "API_HOST": "127.0.0.1",
            "API_DB_HOST": "127.0.0.1",
            "API_DB_PORT": str(self.bouncer.port),
            "API_DB_NAME": self.db,
            "API_DB_USER": self.pg.address.user,
            "API_DB_PASSWORD": self.pg.address.password or "",
            "REDIS_URL": shared_redis(),
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(self.smtp_port),
            "SMTP_STARTTLS": "false",
            "METRICS_PORT": str(free_port()),  # each pod has its own network namespace; here they share one
            "POSTGRES_DB": self.mlflow_db,
        }
        if "POSTGRES_PASSWORD" in env:  # MLflow's own login on the cluster's server
            env |= {"POSTGRES_USER": self.pg.address.user, "POSTGRES_PASSWORD": self.pg.address.password or ""}
        if "MIGRATION_DB_HOST" in env:
            assert env["MIGRATION_DB_HOST"] in self.services
            env |= {
                "MIGRATION_DB_HOST": self.pg.address.host,
                "MIGRATION_DB_PORT": str(self.pg.address.port),
                "BACKUP_DIR": str(self.backups),
            }
        return {"PATH": os.environ["PATH"], **env}

    async def run_job(self, component: str, release: Path) -> str:
        """The Job's command in the release's checkout, as its pod runs it; what it said. It must succeed."""
        job = self.manifests.job(component)
        container = self.manifests.job_container(component)
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, *container["command"][1:]],
            cwd=release,
            env={**self.env(container), "PYTHONPATH": str(release)},
            capture_output=True,
            text=True,
            timeout=job["spec"]["activeDeadlineSeconds"],
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout


async def test_a_release_rolls_out_on_the_manifests_without_a_failed_request(
    pg: Databases, api_db: str, pgbouncer: Bouncer, smtp_port: int, tmp_path: Path
) -> None:
    manifests = render(EXAMPLE)
    # MLflow's database: none yet, as before MLflow's first start (its server makes the store; the upgrade waits).
    cluster = Cluster(manifests, pg, api_db, pgbouncer, smtp_port, tmp_path / "backups", pg.new_name("mlflow"))
    releases = Releases(tmp_path / "releases")
    next_release = releases.commit(
        "N+1: a nickname column (expand); phone_number no longer used, then dropped (contract)",
        {
            "alembic/versions/0900_add_nickname.py": ADD_NICKNAME,
            "alembic/versions/0901_drop_phone_number.py": DROP_PHONE,
        },
        {MODELS: (PHONE, NICKNAME)},
    )
    code = {"N": releases.checkout(releases.n, "n"), "N+1": releases.checkout(next_release, "n1")}
    spec, memory_limit = manifests.api["spec"], quantity_mib(manifests.api_container["resources"]["limits"]["memory"])
    pods: list[Pod] = []

    async def verify(username: str) -> None:  # REQUIRE_VERIFIED_EMAIL=true: the reader's link, followed
        await pg.fetch(api_db, "UPDATE users SET email_verified_at = now() WHERE username = $1", username)

    with haproxy(tmp_path, 4, endpoints=True) as (balancer, ports):

        def pod(release: str) -> Pod:
            slot = len(pods)
            made = Pod(
                name=f"{release}-{slot}",
                container=manifests.api_container,
                env=cluster.env(manifests.api_container),
                release=code[release],
                balancer=balancer,
                slot=slot,
                port=ports[slot],
                log=tmp_path / f"pod-{slot}.log",
            )
            pods.append(made)
            return made

        try:
            serving = [pod("N"), pod("N")]
            for each in serving:
                each.start()
            await wait_available(serving, spec["minReadySeconds"], spec["progressDeadlineSeconds"])
            idle = max(each.memory_mib() for each in serving)
            assert idle <= IDLE_MIB, f"an idle pod holds {idle:.0f} MiB, more than the {IDLE_MIB} MiB it is sized for"
            # Every sign-up comes from this one address: paced under the rendered RATE_LIMIT_PER_MINUTE (with the
            # reader's own sign-up and login).
            per_minute = int(manifests.api_env().get("RATE_LIMIT_PER_MINUTE") or RATE_LIMIT_DEFAULT)
            async with steady_load(balancer, verify=verify, sign_up_every=60 / (per_minute - 4)) as load:
                said, upgraded = await asyncio.gather(
                    cluster.run_job("migrate-expand", code["N+1"]), cluster.run_job("mlflow-upgrade", code["N+1"])
                )
                assert "Contract revision 0901 waits for the rollout" in said, said
                assert "holds no tracking store yet" in upgraded, upgraded
                serving = await rolling_update(manifests.api, serving, lambda: pod("N+1"))
                said = await cluster.run_job("migrate-contract", code["N+1"])
                assert f"API database '{api_db}': 0901 (head)" in said, said
                busy = max(each.memory_mib() for each in serving)
            assert busy < memory_limit, f"a pod holds {busy:.0f} MiB under load: its limit is {memory_limit:.0f} MiB"
            for each in pods:
                assert not each.troubles, each.troubles
        finally:
            for each in pods:
                each.kill()
    print(f"rehearsal: {dict(load.answers)}; idle {idle:.0f} MiB, under load {busy:.0f} MiB")
    assert set(load.answers) == {"register 201", "me 200"}, load.answers
    assert load.answers["me 200"] >= 200, load.answers
