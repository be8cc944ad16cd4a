"""The deployment files hold together: what an operator would check before `docker compose up` or
`kubectl apply -k`, offline and without a Docker engine (schemas of the Kubernetes API, no cluster).

Schema checks (compose-spec, Kubernetes OpenAPI) catch typos; the cross-reference checks here catch
what a schema cannot: a dependency on a service that does not exist, a Secret key nobody provides,
an alert nobody can act on.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from urllib.parse import parse_qsl, urlparse

import kubernetes_validate
import pytest
import yaml

from devstack.brokerusers import k8s_resources
from shared.topology import PRINT_ROOM, UPSTREAM_PRODUCER
from tests.production.manifests import render

ROOT = Path(__file__).resolve().parents[2]

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE_FILE = ROOT / "docker-compose.yml"
ALERTS_FILE = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD_FILE = DEPLOY / "grafana" / "dashboards" / "convocations-delivery.json"
README = DEPLOY / "README.md"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
SLO_FILE = DEPLOY / "prometheus" / "slo.yml"
K8S_VERSION = "1.31.0"

# service directory -> (python package, HTTP port, database role)
SERVICES = {
    "issuer": ("issuer", 8001, "issuer"),
    "mailer": ("mailer", 8002, "mailer"),
    "sms-gateway": ("sms_gateway", 8003, "sms_gateway"),
    "access-portal": ("access_portal", 8000, "access_portal"),
    "secretariat": ("secretariat", 8004, "secretariat"),
    "hospital-gateway": ("hospital_gateway", 8005, "hospital_gateway"),
}
# The key store (period keys): no database, no broker, one replica on its own volume, no autoscaler.
KEY_STORE, KEY_STORE_PORT = "key-store", 8006
# Settings each service needs beyond AMQP_URL and DATABASE_URL.
REQUIRED_SETTINGS = {
    "issuer": {
        "SEAL_KEYS",
        "PATIENT_REF_KEY",
        "MAILER_FIELD_KEY",
        "PORTAL_FIELD_KEY",
        "ISSUER_FIELD_KEY",
        "SECRETARIAT_FIELD_KEY",
        "HOSPITAL_NAME",
        "KEY_STORE_URL",
        "KEY_STORE_TOKEN",
    },
    "mailer": {
        "SMTP_HOST",
        "SMTP_PORT",
        "SMTP_TLS",
        "MAIL_FROM",
        "PORTAL_BASE_URL",
        "MAILER_FIELD_KEY",
        "HOSPITAL_NAME",
    },
    "sms-gateway": {"SMS_PROVIDER_URL", "SMS_ACCOUNT_SID", "SMS_AUTH_TOKEN", "SMS_FIELD_KEY"},
    "access-portal": {
        "PORTAL_BASE_URL",
        "SEAL_KEYS",
        "PORTAL_FIELD_KEY",
        "SMS_FIELD_KEY",
        "PORTAL_SECRET_KEY",
        "STAFF_FIELD_KEY",
        "HOSPITAL_NAME",
        "KEY_STORE_URL",
        "KEY_STORE_TOKEN",
    },
    "secretariat": {
        "OIDC_ISSUER",
        "OIDC_CLIENT_SECRET",
        "PUBLIC_BASE_URL",
        "PATIENT_REF_KEY",
        "STAFF_FIELD_KEY",
        "ISSUER_FIELD_KEY",
        "SECRETARIAT_FIELD_KEY",
        "SECRETARIAT_SECRET_KEY",
    },
    "hospital-gateway": {"OIDC_ISSUER", "API_AUDIENCE"},
}
# What production needs on top (development uses its built-in print-room key and one SMS provider).
PRODUCTION_SETTINGS = {
    "issuer": {"PRINT_ROOM_PUBLIC_KEY"},
    "mailer": set(),
    "access-portal": set(),
    "secretariat": set(),
    "hospital-gateway": {"MLLP_TLS_CERT_FILE", "MLLP_TLS_KEY_FILE", "MLLP_HOST", "HOSPITAL_SYSTEMS"},
    "sms-gateway": {"SMS_GENERIC_URL", "SMS_GENERIC_TOKEN", "SMS_CALLBACK_BASE_URL"},
}
# A key one service encrypts or seals with and another opens: both must hold the same value.
SHARED_KEYS = {
    "SEAL_KEYS": ("issuer", "access-portal"),
    "MAILER_FIELD_KEY": ("issuer", "mailer"),
    "PORTAL_FIELD_KEY": ("issuer", "access-portal"),
    "SMS_FIELD_KEY": ("access-portal", "sms-gateway"),
    "STAFF_FIELD_KEY": ("secretariat", "access-portal"),
    "ISSUER_FIELD_KEY": ("secretariat", "issuer"),
    "SECRETARIAT_FIELD_KEY": ("issuer", "secretariat"),
}
KEY_SETTINGS = {
    "SEAL_KEYS",
    "PATIENT_REF_KEY",
    "MAILER_FIELD_KEY",
    "PORTAL_FIELD_KEY",
    "SMS_FIELD_KEY",
    "PORTAL_SECRET_KEY",
    "STAFF_FIELD_KEY",
    "ISSUER_FIELD_KEY",
    "SECRETARIAT_SECRET_KEY",
    "SECRETARIAT_FIELD_KEY",
    "PRINT_ROOM_PUBLIC_KEY",
}
# Operators' custom resources: kubernetes-validate has no schema for them and would only warn.
# Listed explicitly so that nothing else is ever skipped.
CRD_KINDS = {
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"),
    ("rabbitmq.com/v1beta1", "User"),
    ("rabbitmq.com/v1beta1", "Permission"),
    ("rabbitmq.com/v1beta1", "TopicPermission"),
    ("postgresql.cnpg.io/v1", "Cluster"),
    ("postgresql.cnpg.io/v1", "ScheduledBackup"),
    ("barmancloud.cnpg.io/v1", "ObjectStore"),
    ("rabbitmq.com/v1beta1", "Policy"),
    ("cert-manager.io/v1", "Issuer"),
    ("cert-manager.io/v1", "Certificate"),
    ("external-secrets.io/v1", "ExternalSecret"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "Probe"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("gateway.networking.k8s.io/v1", "Gateway"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
}
# Where each operator's resources may live (Gateway API routes sit beside the services they expose).
CRD_DIRECTORIES = {
    "rabbitmq.com": {"infra"},
    "postgresql.cnpg.io": {"infra"},
    "keda.sh": {"keda"},
    "barmancloud.cnpg.io": {"infra"},
    "cert-manager.io": {"infra"},
    "external-secrets.io": {"infra", "external-secrets", "keda"},
    "monitoring.coreos.com": {"infra", "monitoring"},
    "gateway.networking.k8s.io": {"base", "access-portal", "sms-gateway", "secretariat", "hospital-gateway"},
}
OVERLAYS = {"dev": "convocations-dev", "prod": "convocations", "prod-keda": "convocations"}
MEMORY_LIMIT_MAX = 256 * 2**20
# The issuer holds the documented maximum letter (10 MB) a few times over while sealing it: `make bench`
# measures its peak with four such letters at once (255–271 MB), and its limit is sized on that.
# The hospital gateway parses and validates a whole letter (HL7 or FHIR, up to 13.4 MB of base64) before storing it.
MEMORY_LIMIT_MAX_BY_SERVICE = {"issuer": 320 * 2**20, "hospital-gateway": 320 * 2**20}


def load_yaml_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path}: not KEY=value: {line!r}"
            pairs[key.strip()] = value
    return pairs


def decodes_to_32_bytes(value: str) -> bool:
    try:
        return len(base64.b64decode(value, validate=True)) == 32
    except (binascii.Error, ValueError):
        return False


def memory_bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    m = re.fullmatch(r"(\d+)([KMG]i?)?", str(quantity))
    assert m, f"unexpected memory quantity {quantity!r}"
    return int(m[1]) * units.get(m[2] or "", 1)


def venv_tool(name: str) -> Path:
    """A console script installed beside the running interpreter (the project's venv)."""
    tool = Path(sys.executable).parent / name
    assert tool.exists(), f"{name} is not installed in {tool.parent}: pip install it into the venv"
    return tool


# --------------------------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def compose_env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def test_compose_file_matches_the_compose_specification():
    result = subprocess.run(
        [str(venv_tool("check-jsonschema")), "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_declares_the_whole_stack(compose):
    """What docker-compose.yml declares (this machine has no Docker engine to run it): every service,
    its broker, database, mail and SMS stand-ins and monitoring, on the images the services are built for."""
    assert compose["name"] == "convocations"
    expected = {"rabbitmq", "postgres", "mailpit", "fake-sms", "prometheus", "grafana", *SERVICES}
    assert expected <= set(compose["services"])
    assert compose["services"]["rabbitmq"]["image"].startswith("rabbitmq:4.3-management")
    assert compose["services"]["postgres"]["image"].startswith("postgres:15")
    assert compose["services"]["mailpit"]["image"].startswith("axllent/mailpit")


def dockerfile_has_healthcheck(service: dict) -> bool:
    build = service.get("build")
    if not build:
        return False
    return "HEALTHCHECK" in (ROOT / build["context"] / build["dockerfile"]).read_text(encoding="utf-8")


def test_compose_dependencies_exist_and_services_wait_for_healthy_infrastructure(compose):
    services = compose["services"]
    for name, service in services.items():
        for target, condition in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown service {target}"
            if condition.get("condition") == "service_healthy":
                assert "healthcheck" in services[target] or dockerfile_has_healthcheck(services[target]), (
                    f"{name} waits for {target} to be healthy, but {target} has no healthcheck"
                )
    for name in SERVICES:
        deps = services[name]["depends_on"]
        for infra in ("rabbitmq", "postgres"):
            assert deps[infra]["condition"] == "service_healthy", f"{name} must wait for a healthy {infra}"
    assert services["mailer"]["depends_on"]["mailpit"]["condition"] == "service_healthy"
    assert services["sms-gateway"]["depends_on"]["fake-sms"]["condition"] == "service_healthy"


def test_compose_builds_every_image_from_the_one_dockerfile_at_the_repository_root(compose):
    for name, service in compose["services"].items():
        build = service.get("build")
        if build is None:
            continue
        assert build["context"] == "." and build["dockerfile"] == "Dockerfile", name
        service_dir = build["args"].get("SERVICE_DIR", f"services/{build['args']['SERVICE']}")
        assert (ROOT / service_dir).is_dir(), f"{name}: {service_dir} missing"
    for name, (_package, port, _role) in SERVICES.items():
        assert compose["services"][name]["build"]["args"] == {"SERVICE": name, "HTTP_PORT": str(port)}
    assert compose["services"]["fake-sms"]["build"]["args"]["SERVICE_DIR"] == "tools/devinbox"
    assert not list(ROOT.glob("services/*/Dockerfile")) and not list(ROOT.glob("tools/*/Dockerfile")), (
        "one Dockerfile, parametrised by service"
    )


def test_compose_mounts_only_files_that_exist(compose):
    for name, service in compose["services"].items():
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
    postgres_mounts = compose["services"]["postgres"]["volumes"]
    assert any(v.startswith("./deploy/postgres/init.sql:/docker-entrypoint-initdb.d/") for v in postgres_mounts)


def test_compose_gives_each_service_its_broker_its_database_role_and_its_settings(compose):
    services = compose["services"]
    for name, (_pkg, port, role) in SERVICES.items():
        env = compose_env(services[name])
        missing = {"AMQP_URL", "DATABASE_URL", "ENVIRONMENT", "HTTP_PORT"} | REQUIRED_SETTINGS[name]
        assert not missing - env.keys(), f"{name} lacks {sorted(missing - env.keys())}"
        amqp = urlparse(env["AMQP_URL"])
        assert amqp.scheme == "amqp" and amqp.hostname in services and amqp.port == 5672
        assert (amqp.username, amqp.password) == (
            services["rabbitmq"]["environment"]["RABBITMQ_DEFAULT_USER"],
            services["rabbitmq"]["environment"]["RABBITMQ_DEFAULT_PASS"],
        )
        db = urlparse(env["DATABASE_URL"])
        # init.sql creates one role per service whose development password is its name.
        assert (db.scheme, db.hostname, db.port, db.path) == ("postgresql", "postgres", 5432, "/convocations")
        assert db.username == role and db.password == role, f"{name} must connect as role {role}"
        assert env["HTTP_PORT"] == str(port)
        assert f"127.0.0.1:{port}:{port}" in services[name]["ports"]
        assert env["ENVIRONMENT"] == "development", "compose carries development keys only"


def test_init_sql_creates_the_role_each_service_connects_as():
    init_sql = (DEPLOY / "postgres" / "init.sql").read_text(encoding="utf-8")
    for _pkg, _port, role in SERVICES.values():
        assert f"'{role}'" in init_sql, f"init.sql does not create role {role}"


def test_compose_development_keys_are_distinct_32_byte_keys_shared_where_they_must_be(compose):
    envs = {name: compose_env(compose["services"][name]) for name in SERVICES}
    by_purpose: dict[str, str] = {}
    for name, env in envs.items():
        for key in KEY_SETTINGS & env.keys():
            raw = env[key]
            keys = [item.partition(":")[2] for item in raw.split(",")] if key == "SEAL_KEYS" else [raw]
            for k in keys:
                assert decodes_to_32_bytes(k), f"{name}: {key} is not base64 of 32 bytes"
            assert by_purpose.setdefault(key, raw) == raw, f"{key} differs between services"
    for key, holders in SHARED_KEYS.items():
        assert all(key in envs[h] for h in holders), f"{key} must be given to {holders}"
    assert len(set(by_purpose.values())) == len(by_purpose), "one key per purpose: never reuse a key"


def test_compose_sms_gateway_talks_to_the_fake_provider_with_its_credentials(compose):
    services = compose["services"]
    sms, fake = compose_env(services["sms-gateway"]), compose_env(services["fake-sms"])
    assert urlparse(sms["SMS_PROVIDER_URL"]).hostname == "fake-sms"
    assert (sms["SMS_ACCOUNT_SID"], sms["SMS_AUTH_TOKEN"]) == (
        fake["DEVINBOX_ACCOUNT_SID"],
        fake["DEVINBOX_AUTH_TOKEN"],
    )
    mailer = compose_env(services["mailer"])
    assert (mailer["SMTP_HOST"], mailer["SMTP_PORT"], mailer["SMTP_TLS"]) == ("mailpit", "1025", "none")
    assert "127.0.0.1:8026:8025" in services["fake-sms"]["ports"]


def test_compose_services_run_as_in_kubernetes_non_root_and_read_only(compose):
    for name in SERVICES:
        service = compose["services"][name]
        assert service["user"] == "10001:10001"
        assert service["read_only"] is True and any(t.startswith("/tmp") for t in service["tmpfs"])
        assert service["cap_drop"] == ["ALL"]


def test_compose_publishes_ports_on_loopback_only(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports") or []:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


# ----------------------------------------------------------------------------------- Dockerfiles


DOCKERFILE = ROOT / "Dockerfile"


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    lines, current = [], ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_dockerfile_builds_from_existing_paths_and_runs_as_non_root():
    instructions = dockerfile_instructions(DOCKERFILE)
    args = dict(a.split("=", 1) for i, a in instructions if i == "ARG" and "=" in a)
    stages = [a for i, a in instructions if i == "FROM"]
    assert len(stages) >= 2, "multi-stage: dependencies are built apart from the runtime image"
    for stage in stages:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], stage.split()[0])
        assert image.startswith("python:3.11-slim"), image
    for instruction, arguments in instructions:
        if instruction == "COPY" and "--from=" not in arguments:
            for source in arguments.split()[:-1]:
                for service in SERVICES:  # every value of the build argument names an existing path
                    path = source.replace("${SERVICE_DIR}", f"services/{service}")
                    assert (ROOT / path).exists(), f"COPY {path}: no such path in the repository"
    last_stage = instructions[max(i for i, (ins, _) in enumerate(instructions) if ins == "FROM") :]
    users = [a for i, a in last_stage if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), "the runtime stage must not run as root"
    assert users[-1].split(":")[0] == "10001", "uid 10001: the Kubernetes securityContext expects it"
    assert any(i == "HEALTHCHECK" for i, _ in last_stage)
    assert any(i == "EXPOSE" for i, _ in last_stage)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_image_starts_the_package_on_its_port_and_checks_healthz(name):
    """What the image runs for SERVICE=<name>: its package, on the port its manifests give it."""
    package, port, _role = SERVICES[name]
    instructions = dockerfile_instructions(DOCKERFILE)
    text = " ".join(f"{i} {a}" for i, a in instructions)
    cmd = json.loads([a for i, a in instructions if i == "CMD"][-1])
    started = subprocess.run(
        [*cmd[:2], cmd[2].replace("exec python -m", "echo")],
        env={"SERVICE": name},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert started == package
    assert (ROOT / "services" / name / package / "__main__.py").is_file(), f"python -m {package} has no __main__"
    assert "ARG SERVICE_DIR=services/${SERVICE}" in text and "PYTHONPATH=/app:/app/${SERVICE_DIR}" in text
    assert "HTTP_HOST=0.0.0.0" in text, "the services bind 127.0.0.1 by default: unreachable in a container"
    assert "HTTP_PORT=${HTTP_PORT}" in text and "EXPOSE ${HTTP_PORT}" in text
    config = (ROOT / "deploy/k8s/base" / name / "config.env").read_text()
    assert f"HTTP_PORT={port}" in config, "Kubernetes gives each service its port"
    healthcheck = [a for i, a in instructions if i == "HEALTHCHECK"][-1]
    assert "/healthz" in healthcheck and "urllib" in healthcheck
    assert 'if [ "$SERVICE" = "issuer" ]; then' in text and "fonts-dejavu-core" in text, "only the issuer renders PDFs"


def test_images_install_the_runtime_lock_only_with_every_hash_checked():
    text = DOCKERFILE.read_text()
    assert "COPY requirements/runtime.lock" in text and "--require-hashes" in text
    runtime = _pins(ROOT / "requirements/runtime.lock")
    dev = _pins(ROOT / "requirements/dev.lock")
    assert not {"pytest", "playwright", "hypothesis", "mypy", "ruff"} & set(runtime), "test tools in the image"
    assert all(dev.get(name) == version for name, version in runtime.items()), "runtime and dev pins differ"
    for lock in ("runtime", "dev"):
        entries = re.split(r"\n(?=[a-z0-9])", (ROOT / f"requirements/{lock}.lock").read_text().split("\n", 2)[2])
        assert all("--hash=sha256:" in entry for entry in entries if entry.strip()), f"{lock}.lock without hashes"
    code = [
        ROOT / "shared",
        *(ROOT / "services" / d / pkg for d, (pkg, _, _) in SERVICES.items()),
        ROOT / "tools" / "devinbox" / "devinbox",
    ]
    dev_only = sorted(set(dev) - set(runtime) - {"uv", "pip"})
    modules = {"pyyaml": "yaml", "kubernetes-validate": "kubernetes_validate", "check-jsonschema": "check_jsonschema"}
    imports = re.compile(
        rf"^\s*(?:from|import)\s+({'|'.join(modules.get(n, n.replace('-', '_')) for n in dev_only)})\b", re.M
    )
    for folder in code:
        for source in folder.rglob("*.py"):
            found = imports.search(source.read_text(encoding="utf-8"))
            assert not found, f"{source.relative_to(ROOT)} imports {found[1]}, which the images do not install"


def _pins(lock: Path) -> dict[str, str]:
    return {
        m[1].lower().replace("_", "-"): m[2] for m in re.finditer(r"^([A-Za-z0-9_.-]+)==(\S+)", lock.read_text(), re.M)
    }


def test_dockerignore_keeps_the_build_context_to_what_the_images_copy():
    rules = [r.strip() for r in (ROOT / ".dockerignore").read_text().splitlines() if r.strip() and r[0] != "#"]
    assert rules[0] == "*", "exclude everything (.git, .venv, local state), then re-include"
    included = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    for instruction, arguments in dockerfile_instructions(DOCKERFILE):
        if instruction == "COPY" and "--from=" not in arguments:
            for source in arguments.split()[:-1]:
                source = source.replace("${SERVICE_DIR}", "services").rstrip("/")
                assert any(source == inc or source.startswith(inc + "/") for inc in included), (
                    f".dockerignore drops {source}"
                )


# ---------------------------------------------------------------------------------- Kubernetes


@cache
def kustomizations() -> dict[Path, dict]:
    found = {p.parent: yaml.safe_load(p.read_text(encoding="utf-8")) for p in K8S.rglob("kustomization.yaml")}
    assert found, "no kustomization.yaml under deploy/k8s"
    return found


def referenced_files(directory: Path, kustomization: dict) -> dict[str, set[Path]]:
    """Files a kustomization uses, by role; directories are other kustomizations."""
    refs: dict[str, set[Path]] = {"resources": set(), "directories": set(), "patches": set(), "generators": set()}
    for entry in kustomization.get("resources", []) + kustomization.get("components", []):
        path = (directory / entry).resolve()
        refs["directories" if path.is_dir() else "resources"].add(path)
    for patch in kustomization.get("patches", []):
        if "path" in patch:
            refs["patches"].add((directory / patch["path"]).resolve())
    for configuration in kustomization.get("configurations", []):
        refs["patches"].add((directory / configuration).resolve())
    for generator in kustomization.get("configMapGenerator", []) + kustomization.get("secretGenerator", []):
        for entry in generator.get("envs", []) + generator.get("files", []):
            refs["generators"].add((directory / entry.split("=")[-1]).resolve())
    return refs


def resource_files() -> list[Path]:
    files = set()
    for directory, kustomization in kustomizations().items():
        files |= referenced_files(directory, kustomization)["resources"]
    return sorted(files)


def test_every_file_and_folder_a_kustomization_names_exists():
    checked = 0
    for directory, kustomization in kustomizations().items():
        for role, paths in referenced_files(directory, kustomization).items():
            for path in paths:
                checked += 1
                assert path.exists(), f"{directory.relative_to(ROOT)}: {role} entry {path} does not exist"
                if role == "directories":
                    assert (path / "kustomization.yaml").is_file(), f"{path} is not a kustomization"
    assert checked > 30


def test_no_manifest_is_left_out_of_every_kustomization():
    used = {d / "kustomization.yaml" for d in kustomizations()}
    for directory, kustomization in kustomizations().items():
        for paths in referenced_files(directory, kustomization).values():
            used |= paths
    for path in K8S.rglob("*"):
        if path.suffix in (".yaml", ".yml", ".env"):
            assert path.resolve() in used, f"{path.relative_to(ROOT)} is in no kustomization: dead or forgotten?"


@pytest.mark.parametrize("path", resource_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_is_valid_kubernetes(path):
    for doc in load_yaml_docs(path):
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            group = doc["apiVersion"].split("/")[0]
            assert path.parent.name in CRD_DIRECTORIES[group], f"{doc['kind']} in {path.parent.name}/"
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def base_deployments() -> dict[str, dict]:
    deployments = {}
    for name in SERVICES:
        (doc,) = load_yaml_docs(K8S / "base" / name / "deployment.yaml")
        deployments[name] = doc
    return deployments


def check_probes_and_resources(name: str, deployment: dict) -> None:
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    # The mailer also listens for late bounces forwarded by the relay (SMTP), the hospital gateway for HL7 (MLLP).
    extra = {"mailer": {"bounces": 2525}, "hospital-gateway": {"mllp-his": 2575, "mllp-sandbox": 2576}}
    port = KEY_STORE_PORT if name == KEY_STORE else SERVICES[name][1]
    assert ports == {"http": port, **extra.get(name, {})}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "http"}, f"{name}: {probe}"
    resources = container["resources"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= resources[kind].keys(), f"{name}: {kind} needs cpu and memory"
    assert memory_bytes(resources["limits"]["memory"]) <= MEMORY_LIMIT_MAX_BY_SERVICE.get(name, MEMORY_LIMIT_MAX)
    assert memory_bytes(resources["requests"]["memory"]) <= memory_bytes(resources["limits"]["memory"])
    volumes = {v["name"]: v for v in pod["volumes"]}
    (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert "emptyDir" in volumes[tmp["name"]], f"{name}: /tmp must be an emptyDir (read-only root filesystem)"


def check_hardened(name: str, deployment: dict) -> None:
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True, name
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
    assert pod.get("automountServiceAccountToken") is False, name
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, name
    assert sc["runAsNonRoot"] is True and sc["capabilities"]["drop"] == ["ALL"], name


def test_base_deployments_probe_health_and_readiness_and_bound_their_resources():
    for name, deployment in base_deployments().items():
        check_probes_and_resources(name, deployment)
        assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == f"convocations/{name}"


def test_base_deployments_receive_every_setting_and_read_secrets_from_their_own_secret():
    common = env_file(K8S / "base" / "common.env")
    for name, deployment in base_deployments().items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        config = env_file(K8S / "base" / name / "config.env")
        refs = [e["valueFrom"]["secretKeyRef"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})]
        assert {r["name"] for r in refs} == {f"{name}-secrets"}
        secret_env = {e["name"] for e in container["env"]}
        provided = common.keys() | config.keys() | secret_env
        needed = {"AMQP_URL", "DATABASE_URL", "HTTP_PORT", "HTTP_HOST"} | REQUIRED_SETTINGS[name]
        needed |= PRODUCTION_SETTINGS[name] | {"DATABASE_POOL_SIZE"}
        assert not needed - provided, f"{name} lacks {sorted(needed - provided)}"
        assert not (KEY_SETTINGS | {"DATABASE_URL", "AMQP_URL"}) & (common.keys() | config.keys()), (
            f"{name}: keys and credentials belong in the Secret, not a ConfigMap"
        )
        assert config["HTTP_PORT"] == str(SERVICES[name][1])


def test_every_deployment_is_hardened_by_the_component_the_base_applies():
    base = kustomizations()[K8S / "base"]
    assert "../components/hardened" in base["components"]
    component = kustomizations()[K8S / "components" / "hardened"]
    assert component["kind"] == "Component"
    assert [p["target"] for p in component["patches"]] == [{"kind": "Deployment"}, {"kind": "Job"}], (
        "the patch must reach every Deployment and migration Job"
    )
    patch = component["patches"][0]
    assert {p["path"] for p in component["patches"]} == {patch["path"]}
    patch_file = K8S / "components" / "hardened" / patch["path"]
    ops = {op["path"]: op["value"] for op in yaml.safe_load(patch_file.read_text(encoding="utf-8"))}
    for name, deployment in base_deployments().items():
        assert len(deployment["spec"]["template"]["spec"]["containers"]) == 1, "the patch hardens containers/0"
        patched = json.loads(json.dumps(deployment))
        pod = patched["spec"]["template"]["spec"]
        pod["securityContext"] = ops["/spec/template/spec/securityContext"]
        pod["automountServiceAccountToken"] = ops["/spec/template/spec/automountServiceAccountToken"]
        pod["containers"][0]["securityContext"] = ops["/spec/template/spec/containers/0/securityContext"]
        check_hardened(name, patched)


def network_policies() -> dict[str, dict]:
    policies = {}
    for path in [K8S / "base" / "network-policies.yaml", *(K8S / "base").glob("*/network-policy.yaml")]:
        for doc in load_yaml_docs(path):
            policies[doc["metadata"]["name"]] = doc
    return policies


def ports_of(rules: list[dict]) -> set:
    return {p["port"] for rule in rules for p in rule.get("ports", [])}


def test_network_policies_deny_by_default_and_open_only_what_each_service_needs():
    policies = network_policies()
    deny = policies["default-deny-all"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    assert ports_of(policies["allow-dns"]["spec"]["egress"]) == {53}
    assert ports_of(policies["allow-broker-and-database"]["spec"]["egress"]) == {5672, 5432}
    assert ports_of(policies["allow-prometheus-scrape"]["spec"]["ingress"]) == {"http"}
    assert ports_of(policies["mailer-smtp-egress"]["spec"]["egress"]) == {587, 465, 25}
    assert ports_of(policies["mailer-bounces-ingress"]["spec"]["ingress"]) == {2525}
    assert ports_of(policies["sms-gateway-https-egress"]["spec"]["egress"]) == {443}
    # The Gateway's proxies reach the portal and the SMS gateway's delivery reports, nothing else.
    for name, port in (("access-portal-from-gateway", 8000), ("sms-gateway-reports-from-gateway", 8003)):
        spec = policies[name]["spec"]
        assert spec["policyTypes"] == ["Ingress"] and ports_of(spec["ingress"]) == {port}, name
        (source,) = spec["ingress"][0]["from"]
        assert source["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "gateway-system"}
    # Issue 9: the secretariat had none, so default-deny-all kept staff out and the console from its
    # OpenID provider: the Gateway reaches its port, it reaches the provider over HTTPS.
    assert ports_of(policies["secretariat-oidc-egress"]["spec"]["egress"]) == {443}
    spec = policies["secretariat-from-gateway"]["spec"]
    assert spec["policyTypes"] == ["Ingress"] and ports_of(spec["ingress"]) == {8004}
    (source,) = spec["ingress"][0]["from"]
    assert source["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "gateway-system"}
    for name in (
        "mailer-smtp-egress",
        "sms-gateway-https-egress",
        "access-portal-from-gateway",
        "sms-gateway-reports-from-gateway",
        "secretariat-from-gateway",
        "secretariat-oidc-egress",
    ):
        assert policies[name]["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] in SERVICES


def test_no_real_key_or_password_is_committed_under_deploy_k8s():
    for path in K8S.rglob("*"):
        if path.is_file():
            for token in re.findall(r"[A-Za-z0-9+/]{43}=", path.read_text(encoding="utf-8")):
                assert not decodes_to_32_bytes(token), f"{path.relative_to(ROOT)} holds what looks like a real key"
    for path in (K8S / "overlays" / "dev" / "secrets").glob("*.env"):
        for key, value in env_file(path).items():
            assert "REPLACE_ME" in value, f"{path.name}: {key} must be a placeholder"


def test_dev_placeholder_secrets_provide_every_key_the_deployments_read():
    dev = kustomizations()[K8S / "overlays" / "dev"]
    generated = {g["name"]: g for g in dev["secretGenerator"]}
    for name, deployment in base_deployments().items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        (envs,) = generated[f"{name}-secrets"]["envs"]
        keys = env_file(K8S / "overlays" / "dev" / envs).keys()
        for e in container["env"]:
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in keys, f"{envs} lacks {ref['key']}"


# What `kubectl apply -k` would really send (tests/production/manifests.py renders it).


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_renders_to_valid_kubernetes_in_its_namespace(overlay):
    docs = render(f"overlays/{overlay}")
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) not in CRD_KINDS:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == OVERLAYS[overlay], f"{doc['kind']} {doc['metadata']['name']}"
    (namespace,) = by_kind(docs, "Namespace").values()
    assert namespace["metadata"]["name"] == OVERLAYS[overlay]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert "default-deny-all" in by_kind(docs, "NetworkPolicy")


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_deployments_are_hardened_probed_bounded_and_pinned(overlay):
    deployments = by_kind(render(f"overlays/{overlay}"), "Deployment")
    assert set(deployments) == set(SERVICES) | {KEY_STORE}
    for name, deployment in deployments.items():
        check_probes_and_resources(name, deployment)
        check_hardened(name, deployment)
        image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        repository, _, tag = image.rpartition(":")
        assert "/" in repository and tag and tag != "latest", f"{name}: pin the image tag ({image})"


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_references_resolve(overlay):
    docs = render(f"overlays/{overlay}")
    deployments, services = by_kind(docs, "Deployment"), by_kind(docs, "Service")
    configmaps, secrets = by_kind(docs, "ConfigMap"), by_kind(docs, "Secret")
    for name, deployment in deployments.items():
        template = deployment["spec"]["template"]
        labels = template["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        (container,) = template["spec"]["containers"]
        for source in container["envFrom"]:
            assert source["configMapRef"]["name"] in configmaps
        for e in container["env"]:
            ref = e["valueFrom"]["secretKeyRef"]
            if secrets:  # dev generates its Secrets; prod expects them to exist already, by name
                assert ref["key"] in secrets[ref["name"]]["data"] or ref.get("optional"), f"{name}: {ref}"
            else:
                assert ref["name"] == f"{name}-secrets"
        matching = [s for s in services.values() if s["spec"]["selector"].items() <= labels.items()]
        assert [s["spec"]["ports"][0]["targetPort"] for s in matching].count("http") == 1, name
        # Besides its HTTP Service, the hospital gateway's MLLP ports on a load balancer of the hospital's network.
        assert all(
            s["spec"]["ports"][0]["targetPort"] == "http"
            or (
                name == "hospital-gateway"
                and s["spec"]["type"] == "LoadBalancer"
                and {p["targetPort"] for p in s["spec"]["ports"]} == {"mllp-his", "mllp-sandbox"}
            )
            for s in matching
        )
    for name, job in by_kind(docs, "Job").items():
        labels = job["spec"]["template"]["metadata"]["labels"]
        assert not [s for s in services.values() if s["spec"]["selector"].items() <= labels.items()], (
            f"{name}: a Service would send traffic to the migration pod"
        )
        (container,) = job["spec"]["template"]["spec"]["containers"]
        for e in container["env"]:
            ref = e["valueFrom"]["secretKeyRef"]
            if secrets:
                assert ref["key"] in secrets[ref["name"]]["data"], f"{name}: {ref}"
    autoscaled = [h["spec"]["scaleTargetRef"]["name"] for h in by_kind(docs, "HorizontalPodAutoscaler").values()]
    autoscaled += [s["spec"]["scaleTargetRef"]["name"] for s in by_kind(docs, "ScaledObject").values()]
    assert sorted(autoscaled) == sorted(set(deployments) - {KEY_STORE}), "exactly one autoscaler per Deployment"
    # The key store: one pod at a time on its ReadWriteOnce volume, the old one gone before the new one mounts it.
    key_store = deployments[KEY_STORE]["spec"]
    assert key_store["replicas"] == 1 and key_store["strategy"] == {"type": "Recreate"}
    for pdb in by_kind(docs, "PodDisruptionBudget").values():
        selector = pdb["spec"]["selector"]["matchLabels"].items()
        selected = [d for d in deployments.values() if selector <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(selected) == 1
    assert len(by_kind(docs, "PodDisruptionBudget")) == len(deployments)
    auths = by_kind(docs, "TriggerAuthentication")
    for scaled in by_kind(docs, "ScaledObject").values():
        for trigger in scaled["spec"]["triggers"]:
            if "authenticationRef" in trigger:
                assert trigger["authenticationRef"]["name"] in auths


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_portal_is_served_over_tls_at_its_own_base_url_through_the_gateway(overlay):
    docs = render(f"overlays/{overlay}")
    (gateway,) = by_kind(docs, "Gateway").values()
    listeners = {listener["name"]: listener for listener in gateway["spec"]["listeners"]}
    https, http = listeners["https"], listeners["http"]
    assert https["protocol"] == "HTTPS" and https["port"] == 443 and https["tls"]["mode"] == "Terminate"
    assert https["tls"]["certificateRefs"][0]["name"] and http["hostname"] == https["hostname"]
    host = https["hostname"]
    (common,) = [c for n, c in by_kind(docs, "ConfigMap").items() if n.startswith("convocations-common")]
    assert common["data"]["PORTAL_BASE_URL"] == f"https://{host}", "the e-mailed link must reach the Gateway"
    # The console and the hospital gateway have their own hosts: below.
    routes = {n: r for n, r in by_kind(docs, "HTTPRoute").items() if n not in ("secretariat", "hospital-gateway")}
    for route in routes.values():
        assert route["spec"]["hostnames"] == [host]
        (parent,) = route["spec"]["parentRefs"]
        assert parent["name"] == gateway["metadata"]["name"]
    # Plain HTTP only redirects to HTTPS; everything else is on the HTTPS listener.
    assert [r["spec"]["parentRefs"][0]["sectionName"] for r in routes.values()].count("http") == 1
    (redirect,) = [r for r in routes.values() if r["spec"]["parentRefs"][0]["sectionName"] == "http"]
    assert redirect["spec"]["rules"] == [
        {"filters": [{"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "statusCode": 301}}]}
    ]
    portal = routes["access-portal"]["spec"]["rules"]
    assert portal[0]["backendRefs"] == [{"name": "access-portal", "port": 8000}]
    (hidden,) = [rule for rule in portal if "filters" in rule]
    assert {m["path"]["value"] for m in hidden["matches"]} == {"/metrics", "/healthz", "/readyz"}
    assert all(m["path"]["type"] == "Exact" for m in hidden["matches"]) and "backendRefs" not in hidden


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_hospital_gateway_serves_only_fhir_and_csv_over_tls_on_its_own_listener(overlay):
    docs = render(f"overlays/{overlay}")
    (gateway,) = by_kind(docs, "Gateway").values()
    listener = {item["name"]: item for item in gateway["spec"]["listeners"]}["hospital-https"]
    assert listener["protocol"] == "HTTPS" and listener["tls"]["mode"] == "Terminate"
    route = by_kind(docs, "HTTPRoute")["hospital-gateway"]["spec"]
    assert route["hostnames"] == [listener["hostname"]] and route["parentRefs"][0]["sectionName"] == "hospital-https"
    assert overlay == "dev" or listener["hostname"].endswith("hospital.example.org")
    (rule,) = route["rules"]
    assert {m["path"]["value"] for m in rule["matches"]} == {"/fhir", "/csv"}  # never /metrics or /readyz
    config = overlay_config(docs, "hospital-gateway-config")
    assert overlay == "dev" or config["ENVIRONMENT" if "ENVIRONMENT" in config else "OIDC_ISSUER"].startswith(
        "https://"
    )


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_console_is_served_over_tls_at_its_public_base_url_on_its_own_listener(overlay):
    """Issue 9: the secretariat had no route (staff could not reach it) and the overlays' host patch would
    have put every route on the portal's host; the overlays left its provider and address at example values."""
    from secretariat.settings import SecretariatSettings

    docs = render(f"overlays/{overlay}")
    (config,) = [c for n, c in by_kind(docs, "ConfigMap").items() if n.startswith("secretariat-config")]
    public, issuer = urlparse(config["data"]["PUBLIC_BASE_URL"]), urlparse(config["data"]["OIDC_ISSUER"])
    assert public.scheme == "https" and issuer.scheme == "https"
    assert (
        overlay == "dev"
        or public.netloc.endswith("hospital.example.org")
        and issuer.netloc.endswith("hospital.example.org")
    ), "the prod overlays name the hospital's hosts, not the base's examples"
    (gateway,) = by_kind(docs, "Gateway").values()
    listeners = {listener["name"]: listener for listener in gateway["spec"]["listeners"]}
    staff = listeners["staff-https"]
    assert staff["protocol"] == "HTTPS" and staff["port"] == 443 and staff["tls"]["mode"] == "Terminate"
    assert staff["hostname"] == public.netloc != listeners["https"]["hostname"]
    assert staff["tls"]["certificateRefs"][0]["name"] == "secretariat-tls"
    route = by_kind(docs, "HTTPRoute")["secretariat"]["spec"]
    assert route["hostnames"] == [public.netloc]
    assert route["parentRefs"] == [{"name": gateway["metadata"]["name"], "sectionName": "staff-https"}]
    assert route["rules"][0]["backendRefs"] == [{"name": "secretariat", "port": 8004}]
    (hidden,) = [rule for rule in route["rules"] if "filters" in rule]
    assert {m["path"]["value"] for m in hidden["matches"]} == {"/metrics", "/healthz", "/readyz"}
    # The settings the console starts with in production accept these (https issuer and address).
    settings = SecretariatSettings(
        environment="development",
        oidc_issuer=config["data"]["OIDC_ISSUER"],
        public_base_url=config["data"]["PUBLIC_BASE_URL"],
    )
    assert settings.public_base_url.startswith("https://")


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_sms_delivery_reports_reach_the_gateway_service_at_its_callback_url(overlay):
    docs = render(f"overlays/{overlay}")
    (config,) = [c for n, c in by_kind(docs, "ConfigMap").items() if n.startswith("sms-gateway-config")]
    callback = urlparse(config["data"]["SMS_CALLBACK_BASE_URL"])
    (gateway,) = by_kind(docs, "Gateway").values()
    assert callback.scheme == "https" and callback.netloc == gateway["spec"]["listeners"][0]["hostname"]
    (rule,) = by_kind(docs, "HTTPRoute")["sms-gateway-delivery-reports"]["spec"]["rules"]
    assert {m["path"]["value"] for m in rule["matches"]} == {"/webhooks/twilio/status", "/webhooks/generic/status"}
    assert all(m["path"]["type"] == "Exact" and m["method"] == "POST" for m in rule["matches"])
    assert rule["backendRefs"] == [{"name": "sms-gateway", "port": 8003}]
    # The failover provider is configured: its URL in the ConfigMap, its token from the Secret.
    assert urlparse(config["data"]["SMS_GENERIC_URL"]).scheme == "https"
    (container,) = by_kind(docs, "Deployment")["sms-gateway"]["spec"]["template"]["spec"]["containers"]
    (token,) = [e["valueFrom"]["secretKeyRef"] for e in container["env"] if e["name"] == "SMS_GENERIC_TOKEN"]
    assert token["key"] == "SMS_GENERIC_TOKEN" and token["name"].startswith("sms-gateway-secrets")


def test_no_manifest_relies_on_ingress_nginx():
    for path in K8S.rglob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        assert "nginx.ingress.kubernetes.io" not in text and "kind: Ingress" not in text, path


def test_keda_scales_each_consumer_on_its_own_queue():
    from shared.contracts import CATALOGUE
    from shared.topology import queue_name

    docs = render("overlays/prod-keda")
    scaled = by_kind(docs, "ScaledObject")
    assert set(scaled) == {"issuer", "mailer", "sms-gateway"}
    assert set(by_kind(docs, "HorizontalPodAutoscaler")) == {"access-portal", "secretariat", "hospital-gateway"}
    common = [c for n, c in by_kind(docs, "ConfigMap").items() if n.startswith("convocations-common")][0]
    for name, obj in scaled.items():
        (rabbit,) = [t for t in obj["spec"]["triggers"] if t["type"] == "rabbitmq"]
        queue = rabbit["metadata"]["queueName"]
        prefix = queue_name(common["data"]["EVENTS_EXCHANGE"], name, "")
        assert queue.startswith(prefix) and queue[len(prefix) :] in CATALOGUE, f"{name}: no such queue {queue}"
        auth = by_kind(docs, "TriggerAuthentication")[rabbit["authenticationRef"]["name"]]
        assert auth["spec"]["secretTargetRef"] == [  # the service's amqps URL, verified against the internal CA
            {"parameter": "host", "name": f"{name}-secrets", "key": "AMQP_URL"},
            {"parameter": "tls", "name": "keda-rabbitmq-tls", "key": "tls"},
            {"parameter": "ca", "name": "keda-rabbitmq-tls", "key": "ca"},
        ]


def test_infra_runs_clustered_rabbitmq_and_postgres_with_one_role_and_user_per_service():
    docs = render("infra")
    kinds = {(d["apiVersion"], d["kind"]) for d in docs} - {("v1", "Namespace")}
    assert kinds <= CRD_KINDS
    (mq,) = by_kind(docs, "RabbitmqCluster").values()
    (pg,) = by_kind(docs, "Cluster").values()
    assert mq["spec"]["replicas"] >= 3 and pg["spec"]["instances"] >= 3
    roles = {r["name"] for r in pg["spec"]["managed"]["roles"]}
    # ... and the operators' tool (convocations-admin), which records what it does in operations.dlq_action.
    assert roles == {name for _pkg, _port, role in SERVICES.values() for name in (role, f"{role}_owner")} | {
        "convocations_admin"
    }
    assert set(by_kind(docs, "User")) == set(by_kind(docs, "Permission")) == {*SERVICES, UPSTREAM_PRODUCER, PRINT_ROOM}
    # The services' NetworkPolicy reaches the brokers and databases by these names and labels.
    (policy,) = [
        d
        for d in load_yaml_docs(K8S / "base" / "network-policies.yaml")
        if d["metadata"]["name"] == "allow-broker-and-database"
    ]
    selectors = [to["podSelector"]["matchLabels"] for rule in policy["spec"]["egress"] for to in rule["to"]]
    assert {"app.kubernetes.io/name": mq["metadata"]["name"]} in selectors
    assert {"cnpg.io/cluster": pg["metadata"]["name"]} in selectors


def _grants(docs: list[dict]) -> set[tuple]:
    """What the broker users may do, as RabbitMQ applies it (names, vhost, patterns, credentials)."""
    grants = set()
    for d in docs:
        spec = d.get("spec", {})
        if d["kind"] == "User":
            grants.add(
                (
                    "user",
                    d["metadata"]["name"],
                    spec["importCredentialsSecret"]["name"],
                    spec["rabbitmqClusterReference"]["name"],
                )
            )
        elif d["kind"] in ("Permission", "TopicPermission"):
            grants.add(
                (
                    d["kind"],
                    spec["userReference"]["name"],
                    spec["vhost"],
                    *sorted(spec["permissions"].items()),
                    spec["rabbitmqClusterReference"]["name"],
                )
            )
    return grants


def test_infra_broker_users_hold_exactly_the_permissions_derived_from_the_bus_table():
    """Each service, the hospital's system and its print room may publish only the routing keys they own and
    touch only the queues they declare (the issuer's include the hospital's convocations.upstream.* and the
    print room's convocations.print-room.* queues)."""
    docs = render("infra")
    assert _grants(docs) == _grants(k8s_resources())
    issuer = by_kind(docs, "Permission")["issuer"]["spec"]["permissions"]
    for queue in (
        "convocations.upstream.convocation.status.v1",
        "convocations.print-room.postal.requested.v1.dlq",
        "convocations.issuer.email.sent.v1.retry.30s",
    ):
        assert all(re.fullmatch(issuer[p], queue) for p in ("configure", "write", "read")), queue
    assert not re.fullmatch(issuer["configure"], "convocations.mailer.message.sealed.v1")
    # A retired subscription's queues (shared/topology.py RETIRED): configured (deleted), never used.
    portal = by_kind(docs, "Permission")["access-portal"]["spec"]["permissions"]
    for queue in ("convocations.access-portal.email.sent.v1", "convocations.access-portal.email.sent.v1.dlq"):
        assert re.fullmatch(portal["configure"], queue), queue
        assert not re.fullmatch(portal["read"], queue) and not re.fullmatch(portal["write"], queue), queue
    assert not re.fullmatch(portal["configure"], "convocations.access-portal.email.sent.v1.retry.30s")


# ------------------------------------------------------------------------- Prometheus and Grafana


@pytest.fixture(scope="module")
def alert_rules() -> list[dict]:
    rules = []
    for path in (ALERTS_FILE, SLO_FILE):
        groups = yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
        assert groups and all(g["name"] and g["rules"] for g in groups)
        rules += [rule for group in groups for rule in group["rules"] if "alert" in rule]
    return rules


def test_every_alert_says_how_bad_it_is_and_what_happened(alert_rules):
    names = [r["alert"] for r in alert_rules]
    assert len(names) == len(set(names)), "alert names must be unique"
    for rule in alert_rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, rule["alert"]
        assert rule["expr"].strip(), rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]


def test_alerts_cover_what_the_design_promises(alert_rules):
    exprs = " ".join(r["expr"] for r in alert_rules)
    for metric in (
        "convocations_dead_lettered_total",
        "convocations_outbox_pending",
        "convocations_outbox_oldest_age_seconds",
        "convocations_smtp_attempts_total",
        "convocations_sms_attempts_total",
        'convocations_otp_checks_total{outcome="wrong"}',
        'up{job="convocations"}',
        "probe_success",
        # issue 12: errors the handlers catch, what the broker dead-letters, a stopped relay or
        # sweeper, queues without consumers, vanished targets, the infrastructure, the SLOs.
        'convocations_events_consumed_total{outcome="error"}',
        "rabbitmq_detailed_queue_messages{",
        "rabbitmq_detailed_queue_consumers",
        "convocations_outbox_last_success_timestamp_seconds",
        'convocations_periodic_last_success_timestamp_seconds{task="issuer-sweeper"}',
        "absent(up{",
        'convocations_dependency_up{dependency="database"}',
        'up{job="rabbitmq"}',
        "slo:sli_error:ratio_rate1h",
        "convocations_paper_overdue",
        # a request to send a letter again that the hospital system leaves unanswered
        "convocations_reissue_oldest_waiting_seconds",
    ):
        assert metric in exprs, f"no alert on {metric}"
    assert "faststream_received_processed_messages_total" not in exprs, "FastStream never sees our handlers' errors"


def test_every_alert_has_a_runbook_section_meaning_confirm_act(alert_rules):
    runbooks = RUNBOOKS.read_text(encoding="utf-8")
    sections = dict(re.findall(r"^### (\w+)\n(.*?)(?=^##|\Z)", runbooks, re.M | re.S))
    for rule in alert_rules:
        name = rule["alert"]
        assert name in sections, f"docs/runbooks.md has no section for {name}"
        for part in ("**Meaning**", "**Confirm**", "**Act**"):
            assert part in sections[name], f"the runbook of {name} does not say {part}"
        assert rule["annotations"]["runbook_url"] == f"docs/runbooks.md#{name.lower()}"


def test_prometheus_scrapes_every_service_where_compose_runs_it(compose):
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    for rule_file in config["rule_files"]:
        assert (DEPLOY / "prometheus" / rule_file).is_file()
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    scraped = {c["labels"]["service"]: c["targets"] for c in jobs["convocations"]["static_configs"]}
    probed = {c["labels"]["service"]: c["targets"] for c in jobs["convocations-readiness"]["static_configs"]}
    for name, (_pkg, port, _role) in SERVICES.items():
        assert name in compose["services"]
        assert scraped[name] == [f"{name}:{port}"]
        assert probed[name] == [f"http://{name}:{port}/readyz"]
    (blackbox,) = [
        r["replacement"]
        for r in jobs["convocations-readiness"]["relabel_configs"]
        if r.get("target_label") == "__address__"
    ]
    assert blackbox.split(":")[0] in compose["services"]


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))


def test_dashboard_is_complete_and_uses_the_selected_prometheus(dashboard):
    assert dashboard["title"] == "Convocations delivery" and dashboard["uid"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    exprs = []
    for panel in dashboard["panels"]:
        assert {"x", "y", "w", "h"} <= panel["gridPos"].keys()
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            exprs.append(target["expr"])
    joined = " ".join(exprs)
    for metric in (
        "convocations_funnel_total",
        "slo:sli_error:ratio_rate1h",
        "http_requests_total",
        "convocations_chain_latency_seconds_bucket",
        "convocations_outbox_pending",
        "convocations_dead_lettered_total",
        "rabbitmq_detailed_queue_messages{",
        "rabbitmq_detailed_queue_consumers",
        "convocations_smtp_attempts_total",
        "convocations_sms_attempts_total",
        "convocations_otp_checks_total",
        "convocations_events_consumed_total",
        "process_resident_memory_bytes",
    ):
        assert metric in joined, f"the dashboard does not show {metric}"


def test_grafana_provisioning_points_at_compose_prometheus_and_the_dashboard_folder(compose):
    provisioning = DEPLOY / "grafana" / "provisioning"
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    url = urlparse(datasource["url"])
    assert datasource["type"] == "prometheus" and url.hostname in compose["services"] and url.port == 9090
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "convocations.yml").read_text())["providers"]
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"] if v.startswith("./"))
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"


def promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool not on PATH (Debian package prometheus): structure checked above, PromQL not parsed")
    return tool


def test_promtool_accepts_the_rules_and_their_unit_tests():
    tool = promtool()
    tests = sorted(path.name for path in (DEPLOY / "prometheus").glob("*.test.yml"))
    assert {"alerts.test.yml", "alerts.long.test.yml", "slo.test.yml", "slo.long.test.yml"} <= set(tests), tests
    # One promtool per file, side by side: the rule tests evaluate hours and days of series (3 s for the
    # longest file alone). A slow machine is not a broken rule (pytest's own time-out still bounds it).
    runs = [
        subprocess.Popen(
            [tool, *args], cwd=DEPLOY / "prometheus", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for args in (["check", "rules", "alerts.yml", "slo.yml"], *(["test", "rules", test] for test in tests))
    ]
    for run in runs:
        output, _ = run.communicate(timeout=280)
        assert run.returncode == 0, output


def test_promtool_unit_tests_feed_only_label_sets_a_real_scrape_produced():
    """Issue 18, item 1: the SLO tests fed `le="300"` where prometheus-client writes `le="300.0"`, so they
    passed while the rules selected nothing live. Every input series must be a label set recorded from a
    live run (deploy/prometheus/series.yml; the end-to-end tier fails when the services drift from it)."""
    from devstack import series

    catalogue = series.load()
    problems = []
    for path in sorted((DEPLOY / "prometheus").glob("*.test.yml")):
        for case in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            for given in case["input_series"]:
                name, labels = series.parse_series(given["series"])
                if not name.startswith("kube_"):  # kube-state-metrics: Kubernetes only, never scraped here
                    problems += [f"{path.name}, {case['name']!r}: {p}" for p in series.unknown(name, labels, catalogue)]
    assert not problems, "\n".join(problems)


def test_promtool_parses_every_dashboard_query(dashboard, tmp_path):
    tool = promtool()
    rules = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in (("$__rate_interval", "1m"), ("$__range", "1h"), ("$service", ".*")):
                expr = expr.replace(variable, value)
            rules.append({"record": f"dashboard:panel{panel['id']}:{target['refId']}", "expr": expr})
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [tool, "check", "rules", str(tmp_path / "dashboard.yml")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_repository_refers_to_no_document_outside_it():
    """Every document a file cites is in the repository (the architecture lives in docs/)."""
    outside = re.compile(r"\.\./shared/|(^|[^a-z_/])(DESIGN|LIBRARIES|STYLE)\.md")
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    offenders = []
    for name in tracked.stdout.splitlines():
        path = ROOT / name
        if path.suffix in {".lock", ".png", ".webm", ".pdf"} or not path.is_file():
            continue
        for number, line in enumerate(path.read_text(errors="ignore").splitlines(), 1):
            if outside.search(line):
                offenders.append(f"{name}:{number}")
    assert not offenders, offenders
    assert (ROOT / "docs/architecture.md").is_file()


def test_the_portal_believes_x_forwarded_for_only_from_the_clusters_pod_network_stated_once():
    """Issue 7, item 8: with "*" the audited client address was whatever the client claimed. Issue 18,
    item 11: the range was a literal in the base; each overlay now states its pod network once (ConfigMap
    cluster-network, POD_CIDR) and components/site carries it to FORWARDED_ALLOW_IPS."""
    from access_portal.settings import PortalSettings

    for overlay in OVERLAYS:
        trusted = overlay_config(render(f"overlays/{overlay}"), "access-portal-config")["FORWARDED_ALLOW_IPS"]
        items = [item.strip() for item in trusted.split(",")]
        assert "*" not in items and all(ipaddress.ip_network(item, strict=False) for item in items), overlay
        assert PortalSettings(forwarded_allow_ips=trusted).forwarded_allow_ips
    with pytest.raises(ValueError, match="FORWARDED_ALLOW_IPS"):
        PortalSettings(forwarded_allow_ips="*")
    stated = {
        line.split("POD_CIDR=", 1)[1].strip()
        for path in K8S.rglob("kustomization.yaml")
        for line in path.read_text(encoding="utf-8").splitlines()
        if "POD_CIDR=" in line
    }
    assert stated, "no overlay states its pod network"
    for path in K8S.rglob("*"):
        if path.suffix in (".yaml", ".env"):
            for line in path.read_text(encoding="utf-8").splitlines():
                assert "POD_CIDR=" in line or not any(cidr in line for cidr in stated), (
                    f"{path.relative_to(ROOT)}: the pod network written again: {line.strip()}"
                )


# ------------------------------------------------------------------- production blockers (issue #8)


def overlay_config(docs: list[dict], prefix: str) -> dict[str, str]:
    (config,) = [c["data"] for n, c in by_kind(docs, "ConfigMap").items() if n.startswith(prefix)]
    return config


def max_replicas(docs: list[dict]) -> dict[str, int]:
    bounds = {
        h["spec"]["scaleTargetRef"]["name"]: h["spec"]["maxReplicas"]
        for h in by_kind(docs, "HorizontalPodAutoscaler").values()
    }
    bounds |= {
        s["spec"]["scaleTargetRef"]["name"]: s["spec"]["maxReplicaCount"]
        for s in by_kind(docs, "ScaledObject").values()
    }
    return bounds


# superuser_reserved_connections (PostgreSQL's default), plus the connections CloudNativePG's instance
# manager, its metrics exporter and an operator's psql need on top of the roles' own limits.
RESERVED_CONNECTIONS = 3
HEADROOM_CONNECTIONS = 20


def test_database_connections_fit_at_the_autoscaling_maxima_of_every_overlay():
    """Each replica opens its pool (DATABASE_POOL_SIZE) plus one LISTEN connection for its outbox relay.
    During a rolling update at the maximum replica count there are also the surge pods and the old pods
    still stopping, which hold their connections until they exit (issue 18, item 11: they were not
    counted). minReadySeconds no shorter than the grace period bounds those: the next old pod is stopped
    only once the previous one has certainly exited, so at most maxSurge + maxUnavailable are stopping.
    Each role must stay within its connection limit, and all the roles' limits within max_connections."""
    (pg,) = by_kind(render("infra"), "Cluster").values()
    max_connections = int(pg["spec"]["postgresql"]["parameters"]["max_connections"])
    limits = {r["name"]: r["connectionLimit"] for r in pg["spec"]["managed"]["roles"]}
    assert all(limit > 0 for limit in limits.values()), "every role needs a connection limit"
    assert sum(limits.values()) + RESERVED_CONNECTIONS + HEADROOM_CONNECTIONS <= max_connections, (
        f"role limits {sum(limits.values())} + reserve exceed max_connections {max_connections}"
    )
    for overlay in OVERLAYS:
        docs = render(f"overlays/{overlay}")
        replicas = max_replicas(docs)
        for name, deployment in by_kind(docs, "Deployment").items():
            if name == KEY_STORE:  # no database connection
                continue
            role = SERVICES[name][2]
            config = overlay_config(docs, f"{name}-config")
            pool = int(config.get("DATABASE_POOL_SIZE", 10))  # the settings' default
            spec = deployment["spec"]
            surge, unavailable = (
                spec["strategy"]["rollingUpdate"]["maxSurge"],
                spec["strategy"]["rollingUpdate"]["maxUnavailable"],
            )
            assert spec["minReadySeconds"] >= spec["template"]["spec"]["terminationGracePeriodSeconds"], (
                f"{overlay}: {name}: without minReadySeconds >= the grace period, any number of old pods may be"
                " stopping at once during a rollout, each holding its connections"
            )
            needed = (replicas[name] + surge + surge + unavailable) * (pool + 1)
            assert needed <= limits[role], (
                f"{overlay}: {name} may open {needed} connections as {role} during a rollout at"
                f" {replicas[name]} replicas, whose limit is {limits[role]}"
            )


def test_every_service_stops_within_its_grace_period_with_room_to_spare():
    """Issue 18, item 7: requests (25 s), handlers (20 s) and the relay (10 s) were waited for one after the
    other, up to 60 s against 45 s of grace. The process's own budget (SHUTDOWN_TIMEOUT_SECONDS, which
    tests/e2e/test_resilience.py proves under load), after the preStop pause, ends 10 s before SIGKILL."""
    from shared.settings import ServiceSettings

    for overlay in OVERLAYS:
        docs = render(f"overlays/{overlay}")
        common = overlay_config(docs, "convocations-common")
        for name, deployment in by_kind(docs, "Deployment").items():
            env = common | overlay_config(docs, f"{name}-config")
            budget = float(
                env.get("SHUTDOWN_TIMEOUT_SECONDS", ServiceSettings.model_fields["shutdown_timeout_seconds"].default)
            )
            pod = deployment["spec"]["template"]["spec"]
            (container,) = pod["containers"]
            pause = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
            assert pause + budget + 10 <= pod["terminationGracePeriodSeconds"], (
                f"{overlay}: {name}: preStop {pause} s + shutdown {budget} s leaves under 10 s before SIGKILL"
            )


def image_tag(image: str) -> str:
    """The tag of ``registry/name:tag`` or ``registry/name:tag@sha256:...``."""
    return image.split("@")[0].rsplit(":", 1)[1]


def test_migrations_run_once_per_release_as_a_job_under_the_schema_owner():
    """Issue 18, item 7: one Job name for every release, which had to be deleted by hand before each apply
    (a Job's pod template cannot change) and which GitOps tools could not replace. Each release now has its
    own Job, <service>-migrate-<release> (the images' tag), which Argo CD runs and waits for between the
    configuration and the Deployments."""
    from shared.settings import ServiceSettings

    for overlay in OVERLAYS:
        docs = render(f"overlays/{overlay}")
        assert overlay_config(docs, "convocations-common")["MIGRATE_ON_START"] == "false", overlay
        assert ServiceSettings(migrate_on_start="false").migrate_on_start is False
        jobs = by_kind(docs, "Job")
        deployments = by_kind(docs, "Deployment")
        releases = {
            name: image_tag(deployments[name]["spec"]["template"]["spec"]["containers"][0]["image"])
            for name in SERVICES
        }
        assert set(jobs) == {f"{name}-migrate-{releases[name]}" for name in SERVICES}, overlay
        waves = {
            (d["kind"], d["metadata"]["name"]): d["metadata"]
            .get("annotations", {})
            .get("argocd.argoproj.io/sync-wave", "0")
            for d in docs
        }
        for (kind, doc_name), wave in waves.items():
            expected = {"Namespace": "-3", "ConfigMap": "-2", "Secret": "-2", "ExternalSecret": "-2", "Job": "-1"}.get(
                kind, "0"
            )
            assert wave == expected, f"{overlay}: {kind} {doc_name} in Argo CD sync wave {wave}, not {expected}"
        for name, (package, _port, _role) in SERVICES.items():
            job = jobs[f"{name}-migrate-{releases[name]}"]
            (container,) = job["spec"]["template"]["spec"]["containers"]
            (deployment_container,) = by_kind(docs, "Deployment")[name]["spec"]["template"]["spec"]["containers"]
            assert container["image"] == deployment_container["image"], "the Job migrates to the release it ships"
            assert container["args"] == ["python", "-m", package, "migrate"]
            (env,) = container["env"]  # the Job holds no key, only the owner's database URL
            assert env["name"] == "DATABASE_URL" and env["valueFrom"]["secretKeyRef"]["key"] == "MIGRATION_DATABASE_URL"
            assert env["valueFrom"]["secretKeyRef"]["name"].startswith(f"{name}-secrets")
            assert job["spec"]["template"]["spec"]["restartPolicy"] in ("OnFailure", "Never")
            check_hardened(name, job)
            assert job["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/part-of"] == "convocations", (
                "the NetworkPolicy allow-broker-and-database must let the Job reach Postgres"
            )


def test_the_owner_role_owns_each_schema_and_the_runtime_role_may_only_read_and_write_it():
    (pg,) = by_kind(render("infra"), "Cluster").values()
    sql = [" ".join(s.split()) for s in pg["spec"]["bootstrap"]["initdb"]["postInitApplicationSQL"]]
    for _package, _port, role in SERVICES.values():
        assert f"create schema {role} authorization {role}_owner" in sql
        assert f"grant usage on schema {role} to {role}" in sql
        assert (
            f"alter default privileges for role {role}_owner in schema {role} "
            f"grant select, insert, update, delete on tables to {role}"
        ) in sql
        assert not [
            s
            for s in sql
            if s.startswith("grant") and f" to {role}" in s and ("create" in s.split(" to ")[0] or " all " in s)
        ]
    for path in (K8S / "overlays" / "dev" / "secrets").glob("*.env"):
        values = env_file(path)
        if path.name == f"{KEY_STORE}.example.env":
            assert not {"DATABASE_URL", "MIGRATION_DATABASE_URL"} & values.keys(), "the key store has no database"
            continue
        runtime, owner = urlparse(values["DATABASE_URL"]), urlparse(values["MIGRATION_DATABASE_URL"])
        assert owner.username == f"{runtime.username}_owner" and owner.hostname == runtime.hostname, path.name


def test_the_issuer_is_given_the_print_rooms_public_key():
    (container,) = base_deployments()["issuer"]["spec"]["template"]["spec"]["containers"]
    assert {
        "name": "PRINT_ROOM_PUBLIC_KEY",
        "valueFrom": {"secretKeyRef": {"name": "issuer-secrets", "key": "PRINT_ROOM_PUBLIC_KEY"}},
    } in container["env"]
    assert "PRINT_ROOM_PUBLIC_KEY" in env_file(K8S / "overlays" / "dev" / "secrets" / "issuer.example.env")


def test_monitoring_ships_a_pod_monitor_a_readiness_probe_and_the_alert_rules():
    from devstack.prometheus_rule import TARGET, prometheus_rule

    assert TARGET.read_text(encoding="utf-8") == prometheus_rule(), "run `make prometheus-rule`"
    for overlay in ("prod", "prod-keda"):
        docs = render(f"overlays/{overlay}")
        (monitor,) = by_kind(docs, "PodMonitor").values()
        assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/part-of"  # job="convocations", as the rules expect
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
        assert {
            "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_name"],
            "targetLabel": "service",
        } in endpoint["relabelings"]
        (probe,) = by_kind(docs, "Probe").values()
        assert probe["spec"]["jobName"] == "convocations-readiness"
        assert sorted(probe["spec"]["targets"]["staticConfig"]["static"]) == sorted(
            f"http://{name}.{OVERLAYS[overlay]}.svc:{port}/readyz"
            for name, port in [*((n, p) for n, (_pkg, p, _role) in SERVICES.items()), (KEY_STORE, KEY_STORE_PORT)]
        )
        (rule,) = by_kind(docs, "PrometheusRule").values()
        assert rule["spec"]["groups"] == [
            g for path in (ALERTS_FILE, SLO_FILE) for g in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
        ]


def test_rabbitmq_queues_are_scraped_one_series_per_queue():
    docs = render("infra")
    (mq,) = by_kind(docs, "RabbitmqCluster").values()
    assert "rabbitmq_prometheus" in mq["spec"]["rabbitmq"]["additionalPlugins"]
    (monitor,) = by_kind(docs, "PodMonitor").values()
    assert monitor["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": mq["metadata"]["name"]}
    # The cluster has no plain listener (issue 18, item 5): the plugin's TLS port, verified for the Service's name.
    (certificate,) = [
        c for c in by_kind(docs, "Certificate").values() if c["spec"]["secretName"] == mq["spec"]["tls"]["secretName"]
    ]
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        assert (endpoint["port"], endpoint["scheme"]) == ("prometheus-tls", "https")
        assert endpoint["tlsConfig"]["ca"]["secret"] == {"name": certificate["spec"]["secretName"], "key": "ca.crt"}
        assert endpoint["tlsConfig"]["serverName"] in certificate["spec"]["dnsNames"]
    jobs = {
        e["path"]: [r["replacement"] for r in e["relabelings"] if r["targetLabel"] == "job"]
        for e in monitor["spec"]["podMetricsEndpoints"]
    }
    # The job names and metric families the alert rules read (deploy/prometheus/alerts.yml).
    assert jobs == {"/metrics": ["rabbitmq"], "/metrics/detailed": ["rabbitmq-queues"]}
    (detailed,) = [e for e in monitor["spec"]["podMetricsEndpoints"] if e["path"] == "/metrics/detailed"]
    assert set(detailed["params"]["family"]) == {"queue_coarse_metrics", "queue_consumer_count"}


# ------------------------------------------------------ operations an SRE can trust (issue 18)

PRODUCTION = ("prod", "prod-keda")
INTERNAL_CA = "/etc/convocations/ca/ca.crt"  # where components/internal-tls mounts the internal CA


def secret_reads(docs: list[dict]) -> set[tuple[str, str | None]]:
    """(Secret, key) every workload of a rendering reads; key None for a Secret mounted whole."""
    reads: set[tuple[str, str | None]] = set()
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            pod = doc["spec"]["template"]["spec"]
            for container in pod["containers"]:
                for item in container.get("env", []):
                    if ref := item.get("valueFrom", {}).get("secretKeyRef"):
                        reads.add((ref["name"], ref["key"]))
                for source in container.get("envFrom", []):
                    if "secretRef" in source:
                        reads.add((source["secretRef"]["name"], None))
            reads |= {(v["secret"]["secretName"], None) for v in pod.get("volumes", []) if "secret" in v}
        if doc["kind"] == "TriggerAuthentication":
            reads |= {(ref["name"], ref["key"]) for ref in doc["spec"].get("secretTargetRef", [])}
    return reads


def test_every_secret_production_reads_comes_from_the_secret_store_and_none_is_written_down():
    """Issue 18, item 6: the prod overlay generated no Secret and said to create them by hand; now each one
    a Deployment, a Job or KEDA reads is made by an ExternalSecret from the one ClusterSecretStore, every key
    it is asked for included, and nothing secret is a literal in a manifest."""
    from tests.production.manifests import external_secret_sources

    literal = re.compile(r"://[^/@\s]+:[^/@\s]+@|-----BEGIN")  # a password in a URL, a PEM
    for overlay in PRODUCTION:
        docs = render(f"overlays/{overlay}")
        assert not by_kind(docs, "Secret"), f"{overlay} writes Secrets itself"
        made = {name: set(external_secret_sources(es)) for name, es in by_kind(docs, "ExternalSecret").items()}
        for name, es in by_kind(docs, "ExternalSecret").items():
            assert es["spec"]["secretStoreRef"] == {"kind": "ClusterSecretStore", "name": "convocations"}, name
            assert es["spec"]["target"]["name"] == name and es["spec"]["target"]["creationPolicy"] == "Owner"
        reads = secret_reads(docs)
        assert reads, overlay
        for secret, key in reads:
            assert secret in made, f"{overlay}: {secret} is read but no ExternalSecret makes it"
            assert key is None or key in made[secret], f"{overlay}: {secret} has no key {key}"
        for doc in docs:
            if doc["kind"] in ("ConfigMap", "Deployment", "Job"):
                text = yaml.safe_dump(doc)
                assert not literal.search(text), f"{overlay}: {doc['kind']} {doc['metadata']['name']} holds a secret"
    infra = render("infra")
    made = {name: set(external_secret_sources(es)) for name, es in by_kind(infra, "ExternalSecret").items()}
    (pg,) = by_kind(infra, "Cluster").values()
    needed = {(r["passwordSecret"]["name"], "password") for r in pg["spec"]["managed"]["roles"]}
    needed |= {(u["spec"]["importCredentialsSecret"]["name"], "password") for u in by_kind(infra, "User").values()}
    needed |= {(i["spec"]["ca"]["secretName"], "tls.key") for i in by_kind(infra, "Issuer").values()}
    (store,) = by_kind(infra, "ObjectStore").values()
    needed |= {(c["name"], c["key"]) for c in store["spec"]["configuration"]["s3Credentials"].values()}
    for secret, key in needed:
        assert key in made.get(secret, set()), f"infra: {secret}/{key} comes from no ExternalSecret"


def test_a_key_two_services_share_has_one_source_and_each_purpose_its_own():
    """Issue 18, item 6: a shared key (a seal key the issuer seals with and the portal opens with, a
    password a role is created with and a service logs in with) is one entry of the secret store, read
    by every side; two purposes never share an entry."""
    from tests.production.manifests import external_secret_sources

    infra = {name: external_secret_sources(es) for name, es in by_kind(render("infra"), "ExternalSecret").items()}
    for overlay in PRODUCTION:
        docs = render(f"overlays/{overlay}")
        sources = {name: external_secret_sources(es) for name, es in by_kind(docs, "ExternalSecret").items()}
        for setting in KEY_SETTINGS:
            refs = {
                tuple(sources[f"{service}-secrets"][setting])
                for service in SERVICES
                if setting in sources[f"{service}-secrets"]
            }
            assert len(refs) == 1, f"{overlay}: {setting} comes from {refs}"
            if setting in SHARED_KEYS:
                assert all(setting in sources[f"{h}-secrets"] for h in SHARED_KEYS[setting]), setting
        by_ref: dict[tuple, str] = {}
        for service in SERVICES:
            for setting, refs in sources[f"{service}-secrets"].items():
                for ref in refs:
                    assert by_ref.setdefault(ref, setting) == setting, f"{ref} serves {setting} and {by_ref[ref]}"
        for service in SERVICES:
            mine = sources[f"{service}-secrets"]
            assert mine["DATABASE_URL"] == infra[f"convocations-db-{service}"]["password"], service
            assert mine["MIGRATION_DATABASE_URL"] == infra[f"convocations-db-{service}-owner"]["password"], service
            assert mine["AMQP_URL"] == infra[f"rabbitmq-user-{service}"]["password"], service


def test_the_key_store_keeps_its_keys_apart_and_only_the_issuer_and_the_portal_reach_it(compose):
    """The period keys (docs/architecture.md#period-keys) live on the key store's own volume, never in the
    database or its backups: the key store has no database and no broker, and reaches neither; each caller's
    token is one entry of the secret store, read by the store and by that caller only."""
    from tests.production.manifests import external_secret_sources

    services = compose["services"]
    store = compose_env(services[KEY_STORE])
    assert not {"DATABASE_URL", "AMQP_URL"} & store.keys()
    assert [v for v in services[KEY_STORE]["volumes"] if v.endswith(":/var/lib/key-store")] == [
        "key-store-keys:/var/lib/key-store"
    ]
    assert not [v for v in services["postgres"]["volumes"] if v.startswith("key-store-keys:")]
    tokens = {"issuer": "ISSUER_TOKEN", "access-portal": "PORTAL_TOKEN"}
    for caller, token in tokens.items():
        assert compose_env(services[caller])["KEY_STORE_TOKEN"] == store[token], caller
        assert compose_env(services[caller])["KEY_STORE_URL"] == "http://key-store:8006", caller
    assert store["ISSUER_TOKEN"] != store["PORTAL_TOKEN"]
    policies = network_policies()
    spec = policies["key-store-from-callers"]["spec"]
    (rule,) = spec["ingress"]
    (source,) = rule["from"]
    assert source["podSelector"]["matchExpressions"][0]["values"] == ["issuer", "access-portal"]
    assert ports_of(spec["ingress"]) == {8006}
    excluded = policies["allow-broker-and-database"]["spec"]["podSelector"]["matchExpressions"]
    assert excluded == [{"key": "app.kubernetes.io/name", "operator": "NotIn", "values": [KEY_STORE]}]
    (pvc,) = load_yaml_docs(K8S / "base" / KEY_STORE / "pvc.yaml")
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    for overlay in PRODUCTION:
        sources = {
            name: external_secret_sources(es)
            for name, es in by_kind(render(f"overlays/{overlay}"), "ExternalSecret").items()
        }
        for caller, token in tokens.items():
            assert sources[f"{caller}-secrets"]["KEY_STORE_TOKEN"] == sources["key-store-secrets"][token], caller
        assert set(sources["key-store-secrets"]) == {"KEY_STORE_MASTER_KEY", "ISSUER_TOKEN", "PORTAL_TOKEN"}


def test_production_reaches_the_broker_and_the_database_over_tls_it_verifies():
    """Issue 18, item 5: the URLs were amqp:// and sslmode=require (encrypted, nothing verified). In the prod
    overlays every URL is amqps://...:5671 and sslmode=verify-full, both against the internal CA mounted in
    every pod, for a host name its server certificate carries; the broker has no plain listener left, the
    pods may reach it on 5671 only, and the services refuse anything less (tests/unit)."""
    from tests.production.manifests import resolve_external_secret

    infra = render("infra")
    certificates = {c["spec"]["secretName"]: set(c["spec"]["dnsNames"]) for c in by_kind(infra, "Certificate").values()}
    (mq,) = by_kind(infra, "RabbitmqCluster").values()
    (pg,) = by_kind(infra, "Cluster").values()
    assert mq["spec"]["tls"] == {"secretName": "convocations-mq-server", "disableNonTLSListeners": True}
    assert pg["spec"]["certificates"]["serverTLSSecret"] in certificates
    for overlay in PRODUCTION:
        docs = render(f"overlays/{overlay}")
        secrets = {
            name: resolve_external_secret(es, lambda key, prop: "0123abcd")
            for name, es in by_kind(docs, "ExternalSecret").items()
        }
        for service in SERVICES:
            values = secrets[f"{service}-secrets"]
            amqp = urlparse(values["AMQP_URL"])
            assert (amqp.scheme, amqp.port) == ("amqps", 5671) and amqp.hostname in certificates[
                "convocations-mq-server"
            ]
            assert dict(parse_qsl(amqp.query)) == {"cafile": INTERNAL_CA}
            for key in ("DATABASE_URL", "MIGRATION_DATABASE_URL"):
                db = urlparse(values[key])
                assert db.hostname in certificates[pg["spec"]["certificates"]["serverTLSSecret"]], key
                assert dict(parse_qsl(db.query)) == {"sslmode": "verify-full", "sslrootcert": INTERNAL_CA}, key
        for doc in [*by_kind(docs, "Deployment").values(), *by_kind(docs, "Job").values()]:
            pod = doc["spec"]["template"]["spec"]
            volumes = {v["name"]: v for v in pod["volumes"]}
            mounts = {m["mountPath"]: volumes[m["name"]] for m in pod["containers"][0]["volumeMounts"]}
            assert mounts[str(Path(INTERNAL_CA).parent)]["secret"]["secretName"] == "convocations-internal-ca", doc[
                "metadata"
            ]["name"]
        policy = by_kind(docs, "NetworkPolicy")["allow-broker-and-database"]
        assert sorted(p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]) == [5432, 5671]


def test_every_image_in_production_is_pinned_by_digest():
    """Issue 18, item 7: tags can be moved; a digest names one image. CI writes each release's digests
    (deploy/README.md, "Images by digest")."""
    pinned = re.compile(r"^[^@\s]+:[^@\s]+@sha256:[0-9a-f]{64}$")
    images = []
    for overlay in PRODUCTION:
        for doc in render(f"overlays/{overlay}"):
            if doc["kind"] in ("Deployment", "Job"):
                images += [c["image"] for c in doc["spec"]["template"]["spec"]["containers"]]
    infra = render("infra")
    images += [mq["spec"]["image"] for mq in by_kind(infra, "RabbitmqCluster").values()]
    images += [pg["spec"]["imageName"] for pg in by_kind(infra, "Cluster").values()]
    assert len(images) > 20
    assert [i for i in images if not pinned.match(i)] == []


def test_rabbitmq_4_and_every_quorum_queue_with_the_delivery_limit_the_services_declare():
    """Issue 18, item 7: RabbitMQ 3.13 is out of community support; RabbitMQ 4 gives a quorum queue without
    a delivery limit one of 20. The services declare theirs (x-delivery-limit), and a policy states the
    same value on the broker for every consumer and retry queue, never for a dead-letter queue."""
    from shared import topology
    from shared.retry import RetryPolicy

    infra = render("infra")
    (mq,) = by_kind(infra, "RabbitmqCluster").values()
    assert re.match(r"rabbitmq:4\.\d+-management", mq["spec"]["image"]), mq["spec"]["image"]
    compose = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert re.match(r"rabbitmq:4\.\d+-management", compose["services"]["rabbitmq"]["image"])
    (policy,) = by_kind(infra, "Policy").values()
    assert policy["spec"]["applyTo"] == "queues" and policy["spec"]["vhost"] == "/"
    assert policy["spec"]["definition"] == {"delivery-limit": topology.DELIVERY_LIMIT}
    pattern = re.compile(policy["spec"]["pattern"])
    exchange = "convocations"  # the exchange of every overlay (EVENTS_EXCHANGE) and of the broker users
    assert overlay_config(render("overlays/prod"), "convocations-common")["EVENTS_EXCHANGE"] == exchange
    queues = [
        topology.consumer_queue(exchange, consumer if consumer != topology.UPSTREAM else "upstream", key)
        for key, (_owner, consumers) in topology.BUS.items()
        for consumer in consumers
    ]
    for queue in queues:
        assert queue.arguments["x-delivery-limit"] == topology.DELIVERY_LIMIT, queue.name
        assert pattern.match(queue.name), f"the policy misses {queue.name}"
        for delay in RetryPolicy().delays:
            assert pattern.match(f"{queue.name}.retry.{delay}s"), queue.name
        assert not pattern.match(topology.dead_letter_queue(queue.name).name), f"the policy limits {queue.name}.dlq"


def test_the_database_is_archived_and_backed_up_and_the_restore_renders_a_point_in_time_recovery():
    """Issue 18, item 3: "backups are site-specific" was all there was. WAL archiving and daily base
    backups to the object store with a retention, and deploy/k8s/restore recovering a new cluster from
    the archive up to a time (the production-like tier runs the same tools: test_backup_restore.py)."""
    infra = render("infra")
    (pg,) = by_kind(infra, "Cluster").values()
    (store,) = by_kind(infra, "ObjectStore").values()
    (plugin,) = pg["spec"]["plugins"]
    assert plugin["name"] == "barman-cloud.cloudnative-pg.io" and plugin["isWALArchiver"] is True
    assert plugin["parameters"] == {"barmanObjectName": store["metadata"]["name"], "serverName": pg["metadata"]["name"]}
    assert store["spec"]["retentionPolicy"] == "30d"
    assert store["spec"]["configuration"]["destinationPath"].startswith("s3://")
    assert pg["spec"]["postgresql"]["parameters"]["archive_timeout"] == "5min"
    (daily,) = by_kind(infra, "ScheduledBackup").values()
    assert daily["spec"]["cluster"]["name"] == pg["metadata"]["name"] and daily["spec"]["method"] == "plugin"
    assert len(daily["spec"]["schedule"].split()) == 6  # CloudNativePG's cron: seconds first

    restore = render("restore")
    assert not by_kind(restore, "ConfigMap"), "the restore point is read by kustomize, never applied"
    assert {d["kind"] for d in restore} == {d["kind"] for d in infra}
    (restored,) = by_kind(restore, "Cluster").values()
    assert "initdb" not in restored["spec"]["bootstrap"]
    recovery = restored["spec"]["bootstrap"]["recovery"]
    (origin,) = [c for c in restored["spec"]["externalClusters"] if c["name"] == recovery["source"]]
    assert origin["plugin"]["parameters"] == plugin["parameters"]  # reads what the live cluster archived
    assert restored["spec"]["plugins"][0]["parameters"]["serverName"] != plugin["parameters"]["serverName"]
    assert recovery["recoveryTarget"]["targetTime"]


def test_the_dev_examples_and_the_production_external_secrets_fill_the_same_keys():
    """What each service Secret holds is said twice (the dev overlay's placeholders, the prod overlay's
    ExternalSecrets): the two lists are the same, and the dev URLs are the production ones' shape (TLS)."""
    from tests.production.manifests import external_secret_sources, secret_templates

    examples = secret_templates()
    made = {
        name: external_secret_sources(es) for name, es in by_kind(render("overlays/prod"), "ExternalSecret").items()
    }
    for service in SERVICES:
        name, values = f"{service}-secrets", examples[f"{service}-secrets"]
        assert set(values) == set(made[name]), f"{name}: dev {sorted(values)} / prod {sorted(made[name])}"
        assert urlparse(values["AMQP_URL"]).scheme == "amqps" and "sslmode=verify-full" in values["DATABASE_URL"]


def admits(policy: dict, pod_labels: dict, from_namespace: str, from_labels: dict, port) -> bool:
    """Whether an Ingress NetworkPolicy selecting ``pod_labels`` lets a pod of ``from_namespace`` labelled
    ``from_labels`` reach ``port`` (a number or a container port's name)."""
    spec = policy["spec"]
    if "Ingress" not in spec.get("policyTypes", []) or not selects(spec["podSelector"], pod_labels):
        return False
    for rule in spec.get("ingress", []):
        ports = [p["port"] for p in rule.get("ports", [])]
        if ports and port not in ports:
            continue
        for source in rule.get("from", []):
            namespace_ok = (
                selects(source.get("namespaceSelector", {}), {"kubernetes.io/metadata.name": from_namespace})
                if "namespaceSelector" in source
                else from_namespace == policy["metadata"]["namespace"]
            )
            if namespace_ok and selects(source.get("podSelector", {}), from_labels):
                return True
    return False


def selects(selector: dict, labels: dict) -> bool:
    """A Kubernetes label selector (matchLabels, matchExpressions In/NotIn/Exists) against a label set."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for e in selector.get("matchExpressions", []):
        present, value = e["key"] in labels, labels.get(e["key"])
        if {
            "In": present and value in e.get("values", []),
            "NotIn": not present or value not in e.get("values", []),
            "Exists": present,
            "DoesNotExist": not present,
        }[e["operator"]] is False:
            return False
    return True


@pytest.mark.parametrize("overlay", ["prod", "prod-keda"])
def test_every_readiness_probe_target_resolves_and_is_admitted_from_the_probers_namespace(overlay):
    """Issue 18, item 2: the targets were short names (http://issuer:8001/readyz), which the blackbox exporter
    resolves in its own namespace (monitoring), and no NetworkPolicy let it in: every service would have
    been reported not ready at deploy. Each target must name a Service of the overlay by its namespace, on
    one of its ports, and a NetworkPolicy of that namespace must admit the prober's pods to that port."""
    docs = render(f"overlays/{overlay}")
    services, deployments = by_kind(docs, "Service"), by_kind(docs, "Deployment")
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    (probe,) = by_kind(docs, "Probe").values()
    prober = urlparse(f"http://{probe['spec']['prober']['url']}")
    prober_service, prober_namespace = prober.hostname.split(".")[:2]
    assert prober.hostname in (
        f"{prober_service}.{prober_namespace}.svc",
        f"{prober_service}.{prober_namespace}.svc.cluster.local",
    ), prober.hostname
    prober_labels = {"app.kubernetes.io/name": prober_service}  # the exporter's pods (see network-policy.yaml)
    targets = probe["spec"]["targets"]["staticConfig"]["static"]
    assert len(targets) == len(SERVICES) + 1  # and the key store
    for target in targets:
        url = urlparse(target)
        parts = url.hostname.split(".")
        # A short name resolves in the prober's namespace: only <service>.<namespace>[.svc[.cluster.local]].
        assert len(parts) >= 2 and ".".join(parts[2:]) in ("", "svc", "svc.cluster.local"), (
            f"{target}: name the Service with its namespace, the prober runs in {prober_namespace}"
        )
        name, namespace = parts[:2]
        assert name in services and services[name]["metadata"]["namespace"] == namespace, (
            f"{target}: no Service {name} in namespace {namespace}"
        )
        (service_port,) = [p for p in services[name]["spec"]["ports"] if p["port"] == url.port] or [None]
        assert service_port is not None, f"{target}: Service {name} has no port {url.port}"
        (deployment,) = [
            d
            for d in deployments.values()
            if selects({"matchLabels": services[name]["spec"]["selector"]}, d["spec"]["template"]["metadata"]["labels"])
        ]
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        (container_port,) = [
            p for p in container["ports"] if service_port["targetPort"] in (p.get("name"), p["containerPort"])
        ]
        assert url.path == "/readyz"
        assert any(
            admits(p, pod_labels, prober_namespace, prober_labels, port)
            for p in policies
            for port in (container_port.get("name"), container_port["containerPort"])
        ), (
            f"{target}: no NetworkPolicy of {namespace} admits {prober_service} pods of {prober_namespace} "
            f"to port {container_port}"
        )
        assert probe["spec"]["targets"]["staticConfig"]["relabelingConfigs"][0]["regex"].startswith("http://")


def test_traces_are_exported_in_production_through_an_open_door_and_off_in_development():
    """Issue 18, item 8: OTLP export configured in the overlays; off by default in development."""
    from shared import tracing

    for overlay in ("prod", "prod-keda"):
        docs = render(f"overlays/{overlay}")
        common = overlay_config(docs, "convocations-common")
        endpoint = urlparse(common["OTEL_EXPORTER_OTLP_ENDPOINT"])
        assert common["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf" and endpoint.port == 4318
        collector, namespace = endpoint.hostname.split(".")[:2]
        policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
        for deployment in by_kind(docs, "Deployment").values():
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            assert any(
                selects(p["spec"]["podSelector"], labels)
                and "Egress" in p["spec"]["policyTypes"]
                and any(
                    4318 in [port["port"] for port in rule.get("ports", [])]
                    and any(
                        selects(to.get("namespaceSelector", {}), {"kubernetes.io/metadata.name": namespace})
                        for to in rule["to"]
                    )
                    for rule in p["spec"].get("egress", [])
                )
                for p in policies
            ), f"{overlay}: nothing lets {deployment['metadata']['name']} reach {collector}"
    dev = overlay_config(render("overlays/dev"), "convocations-common")
    assert dev["OTEL_SDK_DISABLED"] == "true"
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {**env, "OTEL_SDK_DISABLED": "true"}.items():
            patch.setenv(name, value)
        assert not tracing.wanted()
        patch.delenv("OTEL_SDK_DISABLED")
        assert tracing.wanted()
        patch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
        assert not tracing.wanted()  # no endpoint (compose, a developer's machine): off
