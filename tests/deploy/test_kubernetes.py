"""deploy/kubernetes, offline: the base and the example overlay render, every object validates strictly against
Kubernetes 1.30's schemas, and the project's own rules hold; each rule is shown failing on a manifest broken on
purpose. deploy.sh runs against a fake kubectl: the order of a release, and a failed Job stopping it."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from pydantic import ValidationError

from app.cli import build_parser
from app.http.app import create_app
from app.settings import PROJECT_ROOT, Settings
from tests.support.kubernetes import (
    API_POD,
    BASE,
    EXAMPLE,
    IDLE_MIB,
    JOBS,
    KUBERNETES,
    Manifests,
    kubectl,
    pod_labels,
    pod_spec,
    quantity_cpus,
    quantity_mib,
    render,
    selects,
)

KUBERNETES_VERSION = "1.30.0"
API_COMPONENT = "app.kubernetes.io/component"
SETTINGS = {name.upper() for name in Settings.model_fields}
Check = Callable[[Manifests], list[str]]


@pytest.fixture(scope="module")
def example() -> Manifests:
    return render(EXAMPLE)


def routes() -> set[str]:
    return {route.path for route in create_app(Settings.model_validate({})).routes}


def setting(env: dict[str, str | None], name: str) -> Any:
    """A setting as the container's environment gives it, else the default."""
    value = env.get(name)
    return value if value is not None else Settings.model_fields[name.lower()].default


# ---- the project's rules: each returns what is wrong (nothing: it holds) ----


def env_is_settings(m: Manifests) -> list[str]:
    """Every variable our containers get is a setting: a misspelt one would be ignored without a word."""
    return [
        f"{where}: {name} is not a setting of app/settings.py"
        for where, container in m.ours()
        for name in m.env(container)
        if name not in SETTINGS
    ]


def env_passes_settings(m: Manifests) -> list[str]:
    """Each container's environment passes the settings' own validation, as the process would at start."""
    problems = []
    for where, container in m.ours():
        values = {name.lower(): value for name, value in m.env(container).items() if value is not None}
        try:
            Settings.model_validate(values)
        except ValidationError as exc:
            problems.append(f"{where}: {exc.errors()[0]['msg']}")
    return problems


def probes_are_routes(m: Manifests) -> list[str]:
    """Startup, readiness and liveness probes GET routes of the app on the API port; readiness is /health/ready,
    liveness /health/live (which asks no database: an outage must not restart every pod)."""
    container, problems, known = m.api_container, [], routes()
    ports = {port.get("name"): port["containerPort"] for port in container.get("ports", [])}
    api_port = int(setting(m.api_env(), "API_PORT"))
    wanted = {"startupProbe": None, "readinessProbe": "/health/ready", "livenessProbe": "/health/live"}
    for probe, path in wanted.items():
        get = container.get(probe, {}).get("httpGet")
        if get is None:
            problems.append(f"{probe}: none, or not an HTTP GET")
            continue
        if get["path"] not in known:
            problems.append(f"{probe}: {get['path']} is not a route of the app")
        elif path and get["path"] != path:
            problems.append(f"{probe}: {get['path']}, not {path}")
        if ports.get(get["port"], get["port"]) != api_port:
            problems.append(f"{probe}: port {get['port']} is not API_PORT ({api_port})")
    return problems


def grace_outlasts_drain(m: Manifests) -> list[str]:
    """terminationGracePeriodSeconds exceeds DRAIN_SECONDS plus the slowest request (a sign-up may wait
    HASH_QUEUE_SECONDS for a hash worker and DB_POOL_TIMEOUT for a connection): nothing is cut off by SIGKILL."""
    env, grace = m.api_env(), pod_spec(m.api).get("terminationGracePeriodSeconds", 30)
    drain = float(setting(env, "DRAIN_SECONDS"))
    slowest = float(setting(env, "HASH_QUEUE_SECONDS")) + float(setting(env, "DB_POOL_TIMEOUT"))
    if grace > drain + slowest:
        return []
    return [f"terminationGracePeriodSeconds {grace} <= DRAIN_SECONDS {drain:g} + the slowest request {slowest:g} s"]


def _service_of(m: Manifests, host: str | None, port: str | None, pods: str) -> str | None:
    """What is wrong with `host:port` as the address of the Service of `pods` (None: nothing)."""
    service = m.named("Service", host or "")
    if service is None:
        return f"{host} is not a Service of the rendering"
    if service["spec"].get("type") == "ExternalName":  # a managed server, named in the overlay
        return None
    targets = {
        pod_labels(each).get("app.kubernetes.io/name")
        for each in m.workloads()
        if selects({"matchLabels": service["spec"].get("selector", {})}, pod_labels(each))
    }
    if targets != {pods}:
        return f"Service {host} leads to {sorted(map(str, targets)) or 'no pod'}, not {pods}"
    if str(port) not in {str(each["port"]) for each in service["spec"]["ports"]}:
        return f"port {port} is not a port of Service {host}"
    return None


def database_routes(m: Manifests) -> list[str]:
    """The Jobs reach PostgreSQL itself (MIGRATION_DB_HOST), never PgBouncer; the API reaches PgBouncer, migrates
    nothing at startup, and has no direct address."""
    problems = []
    for job in m.jobs():
        env = m.env(pod_spec(job)["containers"][0])
        wrong = _service_of(m, env.get("MIGRATION_DB_HOST"), env.get("MIGRATION_DB_PORT"), "postgres")
        problems += [f"Job {job['metadata']['name']}: MIGRATION_DB_HOST: {wrong}"] if wrong else []
    env = m.api_env()
    wrong = _service_of(m, env.get("API_DB_HOST"), env.get("API_DB_PORT"), "pgbouncer")
    problems += [f"API: API_DB_HOST: {wrong}"] if wrong else []
    for name, wanted in (("API_DB_PGBOUNCER", "true"), ("MIGRATE_ON_STARTUP", "false")):
        if str(env.get(name)).lower() != wanted:
            problems.append(f"API: {name} is {env.get(name)}, not {wanted}")
    if env.get("MIGRATION_DB_HOST"):
        problems.append("API: MIGRATION_DB_HOST is set: the API's pods need no route to PostgreSQL itself")
    return problems


def database_admits_only(m: Manifests) -> list[str]:
    """PostgreSQL's NetworkPolicy admits PgBouncer, MLflow and the Jobs only; PgBouncer's and Redis's the API."""
    problems = []
    pods = {
        "api": API_POD,
        **{job: {**API_POD, "app.kubernetes.io/component": job} for job in JOBS},
        "pgbouncer": {"app.kubernetes.io/name": "pgbouncer"},
        "mlflow": {"app.kubernetes.io/name": "mlflow"},
    }
    wanted = {
        "postgres": {"pgbouncer", "mlflow", *JOBS},
        "pgbouncer": {"api"},
        "redis": {"api"},
    }
    for target, admitted in wanted.items():
        policies = [
            p
            for p in m.of_kind("NetworkPolicy")
            if p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") == target
        ]
        if not policies:
            problems.append(f"no NetworkPolicy for {target}")
            continue
        sources = [each for p in policies for rule in p["spec"].get("ingress", []) for each in rule.get("from", [{}])]
        let_in = {
            name for name, labels in pods.items() if any(selects(s.get("podSelector", {}), labels) for s in sources)
        }
        if let_in != admitted:
            problems.append(f"{target} admits {sorted(let_in)}, not {sorted(admitted)}")
    return problems


def pdb_selects_the_api(m: Manifests) -> list[str]:
    """One PodDisruptionBudget selects the API's pods, with the Deployment's own selector, and no Job's pod."""
    budgets = [b for b in m.of_kind("PodDisruptionBudget") if selects(b["spec"]["selector"], pod_labels(m.api))]
    if len(budgets) != 1:
        return [f"{len(budgets)} PodDisruptionBudgets select the API's pods, not 1"]
    (budget,) = budgets
    problems = []
    if budget["spec"]["selector"] != m.api["spec"]["selector"]:
        problems.append("the PodDisruptionBudget's selector is not the Deployment's")
    problems += [
        f"the PodDisruptionBudget also selects Job {job['metadata']['name']}'s pod"
        for job in m.jobs()
        if selects(budget["spec"]["selector"], pod_labels(job))
    ]
    return problems


def jobs_run_the_release(m: Manifests) -> list[str]:
    """The migrate Jobs run the Deployment's image; mlflow-upgrade its tools image of the same tag; one try each,
    kept after they end (their logs)."""
    image = m.api_container["image"]
    tag = image.rpartition(":")[2]
    problems = []
    for component in JOBS:
        job = m.job(component)
        used = pod_spec(job)["containers"][0]["image"]
        if component == "mlflow-upgrade":
            if used.rpartition(":")[2] != tag or used == image:
                problems.append(f"{component} runs {used}, not the tools image tagged {tag}")
        elif used != image:
            problems.append(f"{component} runs {used}, not the Deployment's {image}")
        if job["spec"].get("backoffLimit") != 0 or "ttlSecondsAfterFinished" in job["spec"]:
            problems.append(f"{component}: backoffLimit must be 0 and the Job kept (no ttlSecondsAfterFinished)")
    return problems


def memory_covers_hashing(m: Manifests) -> list[str]:
    """The memory limit covers the idle process and one Argon2 hash per hash worker; HASH_WORKERS is set (the
    container sees the node's cores) to the CPU limit; requests equal limits."""
    env, resources = m.api_env(), m.api_container.get("resources", {})
    limits, requests = resources.get("limits", {}), resources.get("requests", {})
    workers = int(env.get("HASH_WORKERS") or 0)
    if workers < 1:
        return ["HASH_WORKERS is not set: the hash workers would follow the node's cores, not the CPU limit"]
    problems = []
    if "cpu" not in limits or math.ceil(quantity_cpus(limits["cpu"])) != workers:
        problems.append(f"HASH_WORKERS {workers} is not the CPU limit ({limits.get('cpu')})")
    per_hash = int(setting(env, "ARGON2_MEMORY_KIB")) / 1024
    needed = int(setting(env, "WEB_CONCURRENCY")) * IDLE_MIB + workers * per_hash
    if "memory" not in limits or quantity_mib(limits["memory"]) < needed:
        problems.append(f"memory limit {limits.get('memory')} < {needed:.0f}Mi (idle + {workers} x {per_hash:.0f}Mi)")
    if requests.get("memory") != limits.get("memory"):
        problems.append(f"memory request {requests.get('memory')} is not the limit {limits.get('memory')}")
    return problems


def metrics_are_private(m: Manifests) -> list[str]:
    """/metrics is on METRICS_PORT, which no Service exposes and only the monitoring namespace may reach."""
    env, problems = m.api_env(), []
    port = int(setting(env, "METRICS_PORT"))
    names = {each.get("name"): each["containerPort"] for each in m.api_container.get("ports", [])}
    if names.get("metrics") != port:
        problems.append(f"containerPort 'metrics' is {names.get('metrics')}, not METRICS_PORT {port}")
    for service in m.of_kind("Service"):
        if service["spec"].get("selector") and selects({"matchLabels": service["spec"]["selector"]}, pod_labels(m.api)):
            exposed = {str(each.get("targetPort", each["port"])) for each in service["spec"]["ports"]}
            if exposed & {"metrics", str(port)}:
                problems.append(f"Service {service['metadata']['name']} exposes the metrics port")
    for policy in m.of_kind("NetworkPolicy"):
        if not selects(policy["spec"]["podSelector"], pod_labels(m.api)):
            continue
        for rule in policy["spec"].get("ingress", []):
            ports = {str(each.get("port")) for each in rule.get("ports", [])}
            if ports and not ports & {"metrics", str(port)}:
                continue
            sources = rule.get("from", [])
            monitoring = {"kubernetes.io/metadata.name": "monitoring"}
            if not sources or any(s.get("namespaceSelector", {}).get("matchLabels") != monitoring for s in sources):
                problems.append(f"NetworkPolicy {policy['metadata']['name']} lets {sources or 'anyone'} reach metrics")
    return problems


def rollout_keeps_the_replicas(m: Manifests) -> list[str]:
    """A rolling update never goes below the replicas; the HPA owns the scale (no spec.replicas to undo it)."""
    problems, strategy = [], m.api["spec"].get("strategy", {})
    rolling = strategy.get("rollingUpdate", {})
    if strategy.get("type") != "RollingUpdate" or rolling.get("maxUnavailable") != 0 or not rolling.get("maxSurge"):
        problems.append(f"strategy {strategy}: a RollingUpdate with maxUnavailable 0 and a surge")
    scalers = [
        h for h in m.of_kind("HorizontalPodAutoscaler") if h["spec"]["scaleTargetRef"]["name"] == "bikerental-api"
    ]
    if len(scalers) != 1 or scalers[0]["spec"].get("minReplicas", 1) < 2:
        problems.append("one HorizontalPodAutoscaler with minReplicas >= 2 scales the API")
    if "replicas" in m.api["spec"]:
        problems.append("spec.replicas is set: every `kubectl apply` would undo the autoscaler's scale")
    return problems


def contract_waits_for_the_rollout(m: Manifests) -> list[str]:
    """migrate-contract waits (--wait) longer than an old pod takes to go (its grace period, then three missed
    heartbeats), and its deadline is longer than that wait."""
    job = m.job("migrate-contract")
    command = pod_spec(job)["containers"][0]["command"]
    if "--wait" not in command:
        return [f"migrate-contract does not wait for the old pods: {command}"]
    wait = float(command[command.index("--wait") + 1])
    gone = pod_spec(m.api).get("terminationGracePeriodSeconds", 30) + 3 * float(
        setting(m.api_env(), "INSTANCE_HEARTBEAT_SECONDS")
    )
    problems = [] if wait > gone else [f"--wait {wait:g} <= the grace period and three heartbeats ({gone:g} s)"]
    if job["spec"].get("activeDeadlineSeconds", math.inf) <= wait:
        problems.append("migrate-contract's activeDeadlineSeconds is not above its --wait")
    return problems


def commands_are_the_cli(m: Manifests) -> list[str]:
    """Each container of ours runs `python -m app <command>` with arguments the CLI takes."""
    problems, parser = [], build_parser()
    for where, container in m.ours():
        command = [*container.get("command", []), *container.get("args", [])]
        if command[1:3] != ["-m", "app"]:
            problems.append(f"{where}: {command} is not `python -m app ...`")
            continue
        try:
            parser.parse_args(command[3:])
        except SystemExit:
            problems.append(f"{where}: `{' '.join(command[3:])}` is not a command of python -m app")
    return problems


def pods_are_locked_down(m: Manifests) -> list[str]:
    """Every pod runs as non-root with RuntimeDefault seccomp; every container with a read-only root, no privilege
    escalation and no capabilities (the namespace enforces the restricted Pod Security Standard)."""
    problems = []
    for workload in m.workloads():
        spec, where = pod_spec(workload), f"{workload['kind']}/{workload['metadata']['name']}"
        pod = spec.get("securityContext", {})
        if not pod.get("runAsNonRoot") or pod.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{where}: not runAsNonRoot with seccomp RuntimeDefault")
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            context = container.get("securityContext", {})
            locked = (
                context.get("readOnlyRootFilesystem") is True
                and context.get("allowPrivilegeEscalation") is False
                and context.get("capabilities", {}).get("drop") == ["ALL"]
            )
            if not locked:
                problems.append(f"{where}/{container['name']}: root filesystem writable, escalation or capabilities")
    return problems


CHECKS: dict[str, Check] = {
    check.__name__: check
    for check in (
        env_is_settings,
        env_passes_settings,
        probes_are_routes,
        grace_outlasts_drain,
        database_routes,
        database_admits_only,
        pdb_selects_the_api,
        jobs_run_the_release,
        memory_covers_hashing,
        metrics_are_private,
        rollout_keeps_the_replicas,
        contract_waits_for_the_rollout,
        commands_are_the_cli,
        pods_are_locked_down,
    )
}


# ---- breakages: one manifest edit each, and what the rule must then say ----

Edit = Callable[[Manifests], object]


def api_env(name: str, value: str) -> Edit:
    """The API's container gets `name` (set after its ConfigMap: it wins)."""
    return lambda m: m.api_container.setdefault("env", []).append({"name": name, "value": value})


def job_env(component: str, name: str, value: str) -> Edit:
    return lambda m: m.job_container(component)["env"].append({"name": name, "value": value})


def job_command(component: str, *args: str) -> Edit:
    return lambda m: m.job_container(component).update(command=["/srv/.venv/bin/python", "-m", "app", *args])


def probe(name: str, **changes: object) -> Edit:
    return lambda m: m.api_container[name]["httpGet"].update(changes)


def budget_labels(edit: Callable[[dict[str, str]], object]) -> Edit:
    return lambda m: edit(m.get("PodDisruptionBudget", "bikerental-api")["spec"]["selector"]["matchLabels"])


def admit_api_to_postgres(m: Manifests) -> None:
    m.get("NetworkPolicy", "postgres")["spec"]["ingress"][0]["from"].append({"podSelector": {"matchLabels": API_POD}})


def expose_metrics(m: Manifests) -> None:
    ports = m.get("Service", "bikerental-api")["spec"]["ports"]
    ports.append({"name": "metrics", "port": 9100, "targetPort": "metrics"})


def metrics_from_anywhere(m: Manifests) -> None:
    m.get("NetworkPolicy", "bikerental-api")["spec"]["ingress"][1].pop("from")


BREAKAGES: list[tuple[str, Edit, str]] = [
    ("env_is_settings", api_env("SMTP_PASWORD", "x"), "SMTP_PASWORD is not a setting"),
    ("env_passes_settings", api_env("METRICS_PORT", "8000"), "METRICS_PORT"),
    ("probes_are_routes", probe("readinessProbe", path="/healthz"), "/healthz is not a route"),
    ("probes_are_routes", probe("livenessProbe", path="/health/ready"), "/health/ready, not /health/live"),
    ("probes_are_routes", probe("startupProbe", port="metrics"), "port metrics is not API_PORT"),
    ("grace_outlasts_drain", lambda m: pod_spec(m.api).update(terminationGracePeriodSeconds=30), "<= DRAIN_SECONDS"),
    ("database_routes", job_env("migrate-expand", "MIGRATION_DB_HOST", "pgbouncer"), "leads to ['pgbouncer']"),
    ("database_routes", job_env("migrate-contract", "MIGRATION_DB_PORT", "6432"), "6432 is not a port"),
    ("database_routes", api_env("API_DB_HOST", "postgres"), "leads to ['postgres'], not pgbouncer"),
    ("database_routes", api_env("MIGRATE_ON_STARTUP", "true"), "MIGRATE_ON_STARTUP is true"),
    ("database_admits_only", admit_api_to_postgres, "postgres admits ['api'"),
    ("pdb_selects_the_api", budget_labels(lambda labels: labels.update(API_POD, **{API_COMPONENT: "apii"})), "0 Pod"),
    ("pdb_selects_the_api", budget_labels(lambda labels: labels.pop(API_COMPONENT)), "also selects Job"),
    (
        "jobs_run_the_release",
        lambda m: m.job_container("migrate-expand").update(image="registry.example.com/bikerental/api:0.0.9"),
        "not the Deployment's",
    ),
    ("jobs_run_the_release", lambda m: m.job("migrate-contract")["spec"].update(backoffLimit=3), "backoffLimit"),
    ("memory_covers_hashing", lambda m: m.api_container["resources"]["limits"].update(memory="200Mi"), "200Mi <"),
    ("memory_covers_hashing", api_env("HASH_WORKERS", "4"), "HASH_WORKERS 4 is not the CPU limit"),
    ("metrics_are_private", expose_metrics, "exposes the metrics port"),
    ("metrics_are_private", metrics_from_anywhere, "lets anyone reach metrics"),
    (
        "rollout_keeps_the_replicas",
        lambda m: m.api["spec"]["strategy"]["rollingUpdate"].update(maxUnavailable=1),
        "maxUnavailable 0",
    ),
    ("rollout_keeps_the_replicas", lambda m: m.api["spec"].update(replicas=3), "spec.replicas is set"),
    ("contract_waits_for_the_rollout", job_command("migrate-contract", "migrate", "--wait", "30"), "--wait 30 <="),
    ("commands_are_the_cli", job_command("migrate-expand", "upgrade", "head"), "is not a command"),
    (
        "pods_are_locked_down",
        lambda m: pod_spec(m.get("Deployment", "mlflow"))["containers"][0]["securityContext"].update(
            readOnlyRootFilesystem=False
        ),
        "Deployment/mlflow/mlflow",
    ),
]


@pytest.mark.parametrize("directory", [BASE, EXAMPLE], ids=["base", "example overlay"])
def test_every_object_validates_strictly_against_kubernetes_1_30(directory: Path) -> None:
    manifests = render(directory)
    assert len(manifests.objects) > 10
    problems = validation_problems(manifests)
    assert problems == [], "\n".join(problems)


def validation_problems(manifests: Manifests) -> list[str]:
    """kubernetes-validate, strict (an unknown field is an error), with a kind it has no schema for failing too."""
    problems = []
    for each in manifests.objects:
        where = f"{each.get('kind')}/{each.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(each, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{where}: {exc}")
    return problems


def test_the_validation_fails_on_a_misspelt_field(example: Manifests) -> None:
    broken = example.copy()
    broken.api_container["readinessProbe"]["periodSecond"] = 5
    broken.get("Service", "bikerental-api")["spec"]["ports"][0]["port"] = "http"
    problems = validation_problems(broken)
    assert len(problems) == 2, problems
    assert any(p.startswith("Deployment/bikerental-api") and "'periodSecond' was unexpected" in p for p in problems)
    assert any(p.startswith("Service/bikerental-api: spec.ports.0.port") for p in problems), problems


@pytest.mark.parametrize("name", CHECKS)
def test_the_projects_rule_holds(example: Manifests, name: str) -> None:
    assert CHECKS[name](example) == []


@pytest.mark.parametrize(
    ("name", "breakage", "says"), BREAKAGES, ids=[f"{name}: {says}" for name, _, says in BREAKAGES]
)
def test_the_projects_rule_fails_on_a_manifest_broken_on_purpose(
    example: Manifests, name: str, breakage: Edit, says: str
) -> None:
    broken = example.copy()
    breakage(broken)
    problems = CHECKS[name](broken)
    assert any(says in problem for problem in problems), problems


def test_every_rule_is_shown_failing() -> None:
    assert {name for name, _, _ in BREAKAGES} == set(CHECKS)


# ---- deploy.sh, the order of a release, against a fake kubectl ----

DEPLOY = KUBERNETES / "deploy.sh"
MLFLOW_NOW = "registry.example.com/bikerental/mlflow:3.16.0-1"


def deploy(tmp_path: Path, **fake: str) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    """deploy.sh on the example overlay with the fake kubectl; what it printed and each kubectl call."""
    wrapper = tmp_path / "kubectl"
    fake_kubectl = PROJECT_ROOT / "tests" / "support" / "fake_kubectl.py"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{fake_kubectl}" "$@"\n')
    wrapper.chmod(0o755)
    log = tmp_path / "calls.jsonl"
    env = {
        **os.environ,
        "KUBECTL": str(wrapper),
        "RELEASE": "r42",
        "FAKE_KUBECTL_LOG": str(log),
        "FAKE_KUBECTL_REAL": kubectl(),
        **fake,
    }
    done = subprocess.run(["bash", str(DEPLOY), str(EXAMPLE)], env=env, capture_output=True, text=True, check=False)
    return done, [json.loads(line) for line in log.read_text().splitlines()]


def step(calls: list[list[str]], verb: str, *words: str) -> int:
    """The index of the first call with `verb` and all of `words` among its arguments."""
    return next(n for n, call in enumerate(calls) if verb in call and all(w in " ".join(call) for w in words))


def test_a_release_runs_the_jobs_then_the_rollout_then_the_contract(tmp_path: Path) -> None:
    done, calls = deploy(tmp_path, FAKE_MLFLOW_IMAGE=MLFLOW_NOW)
    assert done.returncode == 0, done.stderr
    infra = step(calls, "apply", "notin (job,rollout)")
    stop_mlflow = step(calls, "scale", "deployment/mlflow", "--replicas=0")
    jobs = step(calls, "create", "component in (mlflow-upgrade,migrate-expand)")
    expand_done = step(calls, "get", "job/bikerental-migrate-expand-r42", "Complete")
    upgrade_done = step(calls, "get", "job/bikerental-mlflow-upgrade-r42", "Complete")
    rollout = step(calls, "apply", "deploy-step=rollout")
    api_rolled = step(calls, "rollout", "status", "deployment/bikerental-api")
    contract = step(calls, "create", "component in (migrate-contract)")
    contract_done = step(calls, "get", "job/bikerental-migrate-contract-r42", "Complete")
    assert infra < stop_mlflow < jobs < min(expand_done, upgrade_done)
    assert max(expand_done, upgrade_done) < rollout < api_rolled < contract < contract_done
    said = done.stderr
    assert "Job  bikerental-migrate-expand-r42" not in said
    assert "Job bikerental bikerental-migrate-expand-r42" in said  # Jobs carry the release: they are immutable
    # The first step applies no Job and no Deployment of the release.
    assert "Deployment bikerental bikerental-api" not in said.split("==> jobs")[0]


def test_a_failed_job_stops_the_release_before_anything_rolls_out(tmp_path: Path) -> None:
    done, calls = deploy(tmp_path, FAKE_FAILING_JOB="bikerental-migrate-expand", FAKE_MLFLOW_IMAGE=MLFLOW_NOW)
    assert done.returncode == 1
    assert "job/bikerental-migrate-expand-r42 FAILED: the release stops here" in done.stderr
    assert "Nothing was rolled out" in done.stderr
    assert step(calls, "logs", "batch.kubernetes.io/job-name=bikerental-migrate-expand-r42")
    assert not [call for call in calls if "deploy-step=rollout" in " ".join(call) and "apply" in call]
    assert not [call for call in calls if "migrate-contract" in " ".join(call)]
    # MLflow's server was stopped for its upgrade: the way back is said.
    assert "scale deployment/mlflow --replicas=1" in done.stderr


def test_mlflow_keeps_running_through_a_release_that_keeps_its_version(tmp_path: Path) -> None:
    example = render(EXAMPLE)
    done, calls = deploy(
        tmp_path, FAKE_MLFLOW_IMAGE=pod_spec(example.get("Deployment", "mlflow"))["containers"][0]["image"]
    )
    assert done.returncode == 0, done.stderr
    assert not [call for call in calls if "scale" in call]


def test_the_deploy_script_and_the_dockerfile_pass_their_linters() -> None:
    scripts = [DEPLOY, KUBERNETES / "components" / "postgres" / "10-create-api-database.sh"]
    shellcheck = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True, check=False)
    assert shellcheck.returncode == 0, shellcheck.stdout
    hadolint = subprocess.run(
        ["hadolint", str(PROJECT_ROOT / "deploy" / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert hadolint.returncode == 0, hadolint.stdout
