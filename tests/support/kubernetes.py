"""deploy/kubernetes, rendered by `kubectl kustomize` and read the way Kubernetes reads it: workloads, their pods'
labels and selectors, and each container's environment with its ConfigMaps and Secrets resolved."""

from __future__ import annotations

import base64
import copy
import functools
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from app.settings import PROJECT_ROOT
from tests.support.tools import missing

KUBERNETES = PROJECT_ROOT / "deploy" / "kubernetes"
BASE = KUBERNETES / "base"
EXAMPLE = KUBERNETES / "overlays" / "example"
API_POD = {"app.kubernetes.io/name": "bikerental-api", "app.kubernetes.io/component": "api"}
JOBS = ("mlflow-upgrade", "migrate-expand", "migrate-contract")
WORKLOADS = ("Deployment", "StatefulSet", "Job")
# Resident memory of one idle `serve` process (WEB_CONCURRENCY=1) with its pools and hash workers started: what the
# memory limit is sized from, and what the rehearsal (test_kubernetes_rehearsal.py) checks the pods stay under.
IDLE_MIB = 120

Object = dict[str, Any]


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        missing("kubectl is not installed", "https://kubernetes.io/docs/tasks/tools/; it renders offline")
    return found


@functools.cache
def _rendered(directory: Path) -> str:
    done = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"kubectl kustomize {directory}: {done.stderr}"
    return done.stdout


def render(directory: Path) -> Manifests:
    """The objects `kubectl kustomize directory` writes (a copy each time: tests break them on purpose)."""
    return Manifests([doc for doc in yaml.safe_load_all(_rendered(directory)) if doc])


def pod_spec(workload: Object) -> Object:
    spec: Object = workload["spec"]["template"]["spec"]
    return spec


def pod_labels(workload: Object) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"].get("labels", {})
    return labels


def selects(selector: Object, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against a pod's labels."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        held = {
            "In": labels.get(key) in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not held:
            return False
    return True


def quantity_mib(quantity: str | int) -> float:
    """A memory quantity (`320Mi`, `1Gi`, `500M`, bytes) in MiB."""
    found = re.fullmatch(r"([0-9.]+)([KMG]i?)?", str(quantity))
    assert found, quantity
    scale = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}.get(found[2] or "", 1)
    return float(found[1]) * scale / 2**20


def quantity_cpus(quantity: str | int) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


@dataclass
class Manifests:
    """A rendered kustomization."""

    objects: list[Object]

    def copy(self) -> Manifests:
        return Manifests(copy.deepcopy(self.objects))

    def of_kind(self, kind: str) -> list[Object]:
        return [each for each in self.objects if each["kind"] == kind]

    def named(self, kind: str, name: str) -> Object | None:
        return next((each for each in self.of_kind(kind) if each["metadata"]["name"] == name), None)

    def get(self, kind: str, name: str) -> Object:
        found = self.named(kind, name)
        assert found is not None, f"no {kind} {name} in the rendering"
        return found

    def workloads(self) -> Iterator[Object]:
        return (each for each in self.objects if each["kind"] in WORKLOADS)

    @property
    def api(self) -> Object:
        """The API's Deployment: the one whose pods carry the API's labels."""
        (found,) = [each for each in self.of_kind("Deployment") if selects({"matchLabels": API_POD}, pod_labels(each))]
        return found

    @property
    def api_container(self) -> Object:
        container: Object = pod_spec(self.api)["containers"][0]
        return container

    def job(self, component: str) -> Object:
        """The release Job of `component` (migrate-expand, migrate-contract, mlflow-upgrade)."""
        (found,) = [
            each for each in self.of_kind("Job") if pod_labels(each).get("app.kubernetes.io/component") == component
        ]
        return found

    def job_container(self, component: str) -> Object:
        container: Object = pod_spec(self.job(component))["containers"][0]
        return container

    def jobs(self) -> list[Object]:
        return self.of_kind("Job")

    def ours(self) -> Iterator[tuple[str, Object]]:
        """Every container that runs the project's code (the API's and the Jobs'), with where it is."""
        for workload in self.workloads():
            if pod_labels(workload).get("app.kubernetes.io/name") == API_POD["app.kubernetes.io/name"]:
                for container in pod_spec(workload)["containers"]:
                    yield f"{workload['kind']}/{workload['metadata']['name']}", container

    def data(self, kind: str, name: str) -> dict[str, str]:
        """A ConfigMap's or Secret's keys and values (a Secret's decoded); empty when it is not rendered."""
        found = self.named(kind, name)
        if found is None:
            return {}
        if kind == "Secret":
            return {key: base64.b64decode(value).decode() for key, value in found.get("data", {}).items()}
        return dict(found.get("data", {}))

    def env(self, container: Object) -> dict[str, str | None]:
        """Every variable the container gets, as the kubelet assembles it: `envFrom` first, then `env`. A value
        from a ConfigMap or Secret that is not rendered (a base without the Secret) is None."""
        values: dict[str, str | None] = {}
        for source in container.get("envFrom", []):
            for kind, ref in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if ref in source:
                    for key, value in self.data(kind, source[ref]["name"]).items():
                        values[source.get("prefix", "") + key] = value
        for variable in container.get("env", []):
            origin: Object | None = variable.get("valueFrom")
            if origin is None:
                values[variable["name"]] = variable.get("value", "")
            elif "configMapKeyRef" in origin:
                ref = origin["configMapKeyRef"]
                values[variable["name"]] = self.data("ConfigMap", ref["name"]).get(ref["key"])
            else:
                ref = origin["secretKeyRef"]
                values[variable["name"]] = self.data("Secret", ref["name"]).get(ref["key"])
        return values

    def api_env(self) -> dict[str, str | None]:
        return self.env(self.api_container)
