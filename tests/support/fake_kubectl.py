"""A stand-in for kubectl that deploy.sh drives as it would a cluster: it renders with the real kubectl, answers
`apply`, `create`, `get`, `rollout status` and the rest from the rendered objects, and writes each call down.

    FAKE_KUBECTL_LOG   where each call goes, a JSON list a line
    FAKE_KUBECTL_REAL  the real kubectl (for `kustomize`)
    FAKE_FAILING_JOB   Jobs whose name starts with this end Failed (the others Complete)
    FAKE_MLFLOW_IMAGE  the image MLflow's Deployment runs now (unset: it does not exist yet)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml


def _requirements(selector: str) -> list[str]:
    """A label selector's requirements: split at the commas outside parentheses."""
    return [part.strip() for part in re.split(r",(?![^(]*\))", selector) if part.strip()]


def matches(selector: str, labels: dict[str, str]) -> bool:
    for requirement in _requirements(selector):
        if found := re.fullmatch(r"(\S+)\s+(in|notin)\s+\(([^)]*)\)", requirement):
            key, operator, values = found[1], found[2], {v.strip() for v in found[3].split(",")}
            if (labels.get(key) in values) != (operator == "in"):
                return False
        else:
            key, _, value = requirement.partition("=")
            if labels.get(key) != value:
                return False
    return True


def option(args: list[str], name: str) -> str | None:
    for n, arg in enumerate(args):
        if arg == name and n + 1 < len(args):
            return args[n + 1]
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    return None


def selected(args: list[str]) -> list[dict[str, Any]]:
    path, selector = option(args, "-f"), option(args, "-l") or ""
    assert path is not None
    objects = [each for each in yaml.safe_load_all(Path(path).read_text()) if each]
    return [each for each in objects if matches(selector, each["metadata"].get("labels", {}))]


def main(args: list[str]) -> int:
    with open(os.environ["FAKE_KUBECTL_LOG"], "a") as log:
        log.write(json.dumps(args) + "\n")
    verb = next(arg for arg in args if not arg.startswith("-") and arg != option(args, "-n"))
    if verb == "kustomize":
        return subprocess.run([os.environ["FAKE_KUBECTL_REAL"], *args]).returncode
    if verb in ("apply", "create") and "--dry-run=client" in args:
        for each in selected(args):
            image = each["spec"]["template"]["spec"]["containers"][0]["image"]
            print(f"{each['metadata'].get('namespace', '')} {image}")
        return 0
    if verb in ("apply", "create"):
        for each in selected(args):
            print(f"{each['kind']} {each['metadata'].get('namespace', '')} {each['metadata']['name']}")
        return 0
    if verb == "get" and "deployment/mlflow" in args:
        print(os.environ.get("FAKE_MLFLOW_IMAGE", ""), end="")
        return 0
    if verb == "get" and (job := next((arg for arg in args if arg.startswith("job/")), None)):
        failing = os.environ.get("FAKE_FAILING_JOB") or "\0"
        failed = job.removeprefix("job/").startswith(failing)
        condition = re.search(r'@\.type=="(\w+)"', option(args, "-o") or "")
        assert condition is not None
        print("True" if (condition[1] == "Failed") == failed else "", end="")
        return 0
    return 0  # rollout status, scale, wait, describe, logs, get jobs, delete: done


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
