"""What a cluster does with the API's Deployment, played on this machine from the rendered manifest: a kubelet that
starts a container's command and probes it at the manifest's periods and thresholds, a Service whose endpoints are
the ready pods (HAProxy, told by the probes), and a rolling update within maxSurge and maxUnavailable.

What it cannot show (scheduling, DNS, image pulls, the network policies) the manifests answer for themselves."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from tests.support.balancer import Balancer
from tests.support.kubernetes import Object, pod_spec

# How long a Service's endpoints take to drop a pod that is being deleted (the kubelet has sent SIGTERM already):
# kube-proxy on every node catches up within about a second.
ENDPOINTS_LAG_SECONDS = 1.0


@dataclass(frozen=True)
class Probe:
    """A container's httpGet probe as the kubelet runs it."""

    path: str
    period: float
    timeout: float
    failures: int
    successes: int
    delay: float

    @classmethod
    def of(cls, container: Object, name: str) -> Probe:
        probe = container[name]
        return cls(
            path=probe["httpGet"]["path"],
            period=probe.get("periodSeconds", 10),
            timeout=probe.get("timeoutSeconds", 1),
            failures=probe.get("failureThreshold", 3),
            successes=probe.get("successThreshold", 1),
            delay=probe.get("initialDelaySeconds", 0),
        )

    async def passes(self, client: httpx.AsyncClient, port: int) -> bool:
        """One probe: any answer from 200 to 399 within the time-out passes, as the kubelet's httpGet."""
        try:
            answer = await client.get(f"http://127.0.0.1:{port}{self.path}", timeout=self.timeout)
        except httpx.HTTPError:
            return False
        return 200 <= answer.status_code < 400


@dataclass
class Pod:
    """One replica: the container's command in a release's checkout, on a balancer slot, probed as the kubelet
    would; what went wrong (a failed startup, a liveness restart, a SIGKILL at the end of the grace period) is
    noted in `troubles`."""

    name: str
    container: Object
    env: dict[str, str]
    release: Path
    balancer: Balancer
    slot: int
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None
    ready_since: float | None = None
    terminating: bool = False
    troubles: list[str] = field(default_factory=list)
    _kubelet: asyncio.Task[None] | None = None

    @property
    def server(self) -> str:
        return f"i{self.slot}"

    def start(self) -> None:
        command = [*self.container.get("command", []), *self.container.get("args", [])]
        assert command[1:3] == ["-m", "app"], command
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, *command[1:]],  # the image's Python is this one; its /srv is the release
                env={**self.env, "API_PORT": str(self.port), "PYTHONPATH": str(self.release)},
                cwd=self.release,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._kubelet = asyncio.create_task(self._probe_all())

    async def _probe_all(self) -> None:
        startup, readiness, liveness = (
            Probe.of(self.container, name) for name in ("startupProbe", "readinessProbe", "livenessProbe")
        )
        async with httpx.AsyncClient() as client:
            await asyncio.sleep(startup.delay)
            failed = 0
            while not await startup.passes(client, self.port):
                failed += 1
                if failed >= startup.failures or not self.running:
                    self.troubles.append(f"{self.name}: startup probe failed {failed} times")
                    return
                await asyncio.sleep(startup.period)
            await asyncio.gather(self._readiness(client, readiness), self._liveness(client, liveness))

    async def _readiness(self, client: httpx.AsyncClient, probe: Probe) -> None:
        await asyncio.sleep(probe.delay)
        passed = failed = 0
        while self.running:
            if await probe.passes(client, self.port):
                passed, failed = passed + 1, 0
            else:
                passed, failed = 0, failed + 1
            if self.ready_since is None and passed >= probe.successes and not self.terminating:
                self.ready_since = time.monotonic()
                self.balancer.route(self.server, True)
            elif self.ready_since is not None and failed >= probe.failures:
                self.ready_since = None
                self.balancer.route(self.server, False)
            await asyncio.sleep(probe.period)

    async def _liveness(self, client: httpx.AsyncClient, probe: Probe) -> None:
        await asyncio.sleep(probe.delay)
        failed = 0
        while self.running and not self.terminating:
            failed = 0 if await probe.passes(client, self.port) else failed + 1
            if failed >= probe.failures:
                self.troubles.append(f"{self.name}: liveness probe failed {failed} times: the kubelet restarts it")
                return
            await asyncio.sleep(probe.period)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def assert_well(self) -> None:
        """Running, and nothing the kubelet would have acted on."""
        if self.troubles or not self.running:  # the log is read only to say what went wrong
            tail = self.log.read_text()[-3000:]
            assert not self.troubles, [*self.troubles, tail]
            assert self.running, f"{self.name} exited:\n{tail}"

    def available(self, min_ready_seconds: float) -> bool:
        return self.ready_since is not None and time.monotonic() - self.ready_since >= min_ready_seconds

    def memory_mib(self) -> float:
        """Resident memory of the container's processes."""
        assert self.process is not None
        root = psutil.Process(self.process.pid)
        return sum(each.memory_info().rss for each in [root, *root.children(recursive=True)]) / 2**20

    async def delete(self, grace_seconds: float) -> None:
        """As the API server deletes a pod: SIGTERM now, out of the endpoints a moment later, SIGKILL once the
        grace period is over."""
        assert self.process is not None
        self.terminating = True
        self.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(ENDPOINTS_LAG_SECONDS)
        self.balancer.route(self.server, False)
        give_up = time.monotonic() + grace_seconds - ENDPOINTS_LAG_SECONDS
        while self.process.poll() is None:
            if time.monotonic() > give_up:
                self.troubles.append(f"{self.name}: still running after the grace period: SIGKILL")
                self.kill()
            await asyncio.sleep(0.05)
        if self.process.returncode not in (0, -signal.SIGKILL):
            self.troubles.append(f"{self.name}: exited with {self.process.returncode}")
        if self._kubelet is not None:
            await self._kubelet

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        if self._kubelet is not None:
            self._kubelet.cancel()


async def wait_available(pods: list[Pod], min_ready_seconds: float, deadline_seconds: float) -> None:
    """Until every pod has been ready for minReadySeconds (the Deployment counts it available), or fail at the
    Deployment's progressDeadlineSeconds."""
    give_up = time.monotonic() + deadline_seconds
    while not all(pod.available(min_ready_seconds) for pod in pods):
        for pod in pods:
            pod.assert_well()
        assert time.monotonic() < give_up, f"not available within {deadline_seconds} s: {[p.name for p in pods]}"
        await asyncio.sleep(0.1)


async def rolling_update(deployment: Object, old: list[Pod], make: Callable[[], Pod]) -> list[Pod]:
    """Replace `old` by pods from `make` as the Deployment controller does: at most maxSurge pods above the
    replicas, never fewer than replicas - maxUnavailable available (ready for minReadySeconds), an old pod deleted
    (with its grace period) once that allows it. The new pods, all available."""
    spec, replicas = deployment["spec"], len(old)
    rolling = spec["strategy"]["rollingUpdate"]
    surge, unavailable = int(rolling["maxSurge"]), int(rolling["maxUnavailable"])
    min_ready = spec.get("minReadySeconds", 0)
    grace = pod_spec(deployment).get("terminationGracePeriodSeconds", 30)
    give_up = time.monotonic() + spec.get("progressDeadlineSeconds", 600)
    remaining, new, deleting = list(old), list[Pod](), list[asyncio.Task[None]]()
    while remaining or not all(pod.available(min_ready) for pod in new):
        while len(new) < replicas and len(remaining) + len(new) < replicas + surge:
            new.append(make())
            new[-1].start()
        available = sum(pod.available(min_ready) for pod in [*remaining, *new])
        for _ in range(min(len(remaining), available - (replicas - unavailable))):
            deleting.append(asyncio.create_task(remaining.pop(0).delete(grace)))
        for pod in new:
            pod.assert_well()
        assert time.monotonic() < give_up, "the rollout passed its progressDeadlineSeconds"
        await asyncio.sleep(0.1)
    await asyncio.gather(*deleting)
    return new
