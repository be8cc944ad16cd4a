"""Create, on a local RabbitMQ, the broker users production has (shared/topology.py broker_permissions).

Kubernetes gets the same users from deploy/k8s/infra/rabbitmq-users.yaml; here they are loaded with one
``rabbitmqctl import_definitions`` (users, permissions and topic permissions are merged in, nothing
else in the broker changes). Used by the tests that run the services with their own users.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
from urllib.parse import quote

from shared import topology


def password_hash(password: str) -> str:
    # RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password)), 4-byte salt.
    salt = os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def definitions(vhost: str, exchange: str, passwords: dict[str, str], prefix: str = "") -> dict:
    """RabbitMQ definitions for the users of ``broker_permissions(exchange)`` in ``vhost``; each user
    is named ``prefix + party`` (a prefix keeps test users apart from real ones: users are global)."""
    users, permissions, topic_permissions = [], [], []
    for party, grant in topology.broker_permissions(exchange).items():
        user = prefix + grant.user
        users.append(
            {
                "name": user,
                "password_hash": password_hash(passwords[party]),
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": [],
            }
        )
        permissions.append(
            {"user": user, "vhost": vhost, "configure": grant.configure, "write": grant.write, "read": grant.read}
        )
        topic_permissions += [
            {"user": user, "vhost": vhost, "exchange": name, "write": write, "read": read}
            for name, (write, read) in grant.topics.items()
        ]
    return {
        "users": users,
        "vhosts": [{"name": vhost}],
        "permissions": permissions,
        "topic_permissions": topic_permissions,
    }


def create_broker_users(
    vhost: str, exchange: str, *, prefix: str = "", host: str = "127.0.0.1", port: int = 5672
) -> dict[str, str]:
    """Create (or reset) the users with fresh random passwords; returns each party's AMQP URL
    (party = a service name, ``topology.UPSTREAM_PRODUCER`` for the hospital's system, or
    ``topology.PRINT_ROOM`` for its print room)."""
    passwords = {party: secrets.token_hex(16) for party in topology.broker_permissions(exchange)}
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(definitions(vhost, exchange, passwords, prefix), f)
        f.flush()
        os.chmod(f.name, 0o644)  # rabbitmqctl reads it as the broker's user
        _rabbitmqctl("import_definitions", f.name)
    return {
        party: f"amqp://{quote(prefix + party, safe='')}:{password}@{host}:{port}/{quote(vhost, safe='')}"
        for party, password in passwords.items()
    }


def delete_broker_users(exchange: str, *, prefix: str = "") -> None:
    for party in topology.broker_permissions(exchange):
        subprocess.run([_rabbitmqctl_path(), "delete_user", prefix + party], capture_output=True, timeout=180)


def _rabbitmqctl_path() -> str:
    path = shutil.which("rabbitmqctl")
    if not path:
        raise RuntimeError("rabbitmqctl not found: run this on the machine of the broker")
    return path


def _rabbitmqctl(*args: str) -> None:
    done = subprocess.run([_rabbitmqctl_path(), *args], capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {args[0]} failed: {done.stderr.strip()[-500:]}")


# --- the same users for Kubernetes (RabbitMQ Messaging Topology Operator) ----------------------------

K8S_HEADER = """\
# Messaging Topology Operator (rabbitmq.com): one broker user per service, one for the hospital's
# system (hospital-his) and one for its print room (print-room), each allowed exactly what
# shared/topology.py broker_permissions derives from the bus table: configure/write/read on the shared
# exchanges and its own queues (<exchange>.<service>.<routing key>[.dlq|.retry.<n>s]; the issuer also
# declares the hospital's queues convocations.upstream.* and the print room's convocations.print-room.*),
# and, per topic exchange, the routing keys it may publish (write)
# and bind (read). amq.default: retry holding queues dead-letter through the default exchange.
# Each user's credentials come from a Secret rabbitmq-user-<user> (keys username, password), made from the
# secret store (external-secrets.yaml) with the password the service's AMQP_URL is made with (README.md).
# Generated: PYTHONPATH=.:tools python -m devstack.brokerusers > deploy/k8s/infra/rabbitmq-users.yaml
"""


def k8s_resources(exchange: str = "convocations", vhost: str = "/", cluster: str = "convocations-mq") -> list[dict]:
    """A User, a Permission and a TopicPermission per topic exchange, for each party."""
    ref = {"name": cluster}
    docs: list[dict] = []
    for grant in topology.broker_permissions(exchange).values():
        user = grant.user
        docs.append(
            {
                "apiVersion": "rabbitmq.com/v1beta1",
                "kind": "User",
                "metadata": {"name": user},
                "spec": {"rabbitmqClusterReference": ref, "importCredentialsSecret": {"name": f"rabbitmq-user-{user}"}},
            }
        )
        docs.append(
            {
                "apiVersion": "rabbitmq.com/v1beta1",
                "kind": "Permission",
                "metadata": {"name": user},
                "spec": {
                    "vhost": vhost,
                    "userReference": {"name": user},
                    "permissions": {"configure": grant.configure, "write": grant.write, "read": grant.read},
                    "rabbitmqClusterReference": ref,
                },
            }
        )
        for name, (write, read) in grant.topics.items():
            docs.append(
                {
                    "apiVersion": "rabbitmq.com/v1beta1",
                    "kind": "TopicPermission",
                    "metadata": {"name": f"{user}-{name.replace('.', '-')}"},
                    "spec": {
                        "vhost": vhost,
                        "userReference": {"name": user},
                        "permissions": {"exchange": name, "write": write, "read": read},
                        "rabbitmqClusterReference": ref,
                    },
                }
            )
    return docs


if __name__ == "__main__":
    import yaml

    print(K8S_HEADER + yaml.safe_dump_all(k8s_resources(), sort_keys=False, width=1000), end="")
