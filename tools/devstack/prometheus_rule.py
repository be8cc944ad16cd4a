"""Write deploy/k8s/components/monitoring/prometheus-rule.yaml from deploy/prometheus/alerts.yml and
slo.yml (`make prometheus-rule`): one set of rules, for compose's Prometheus and the Operator alike."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULE_FILES = (ROOT / "deploy/prometheus/alerts.yml", ROOT / "deploy/prometheus/slo.yml")
TARGET = ROOT / "deploy/k8s/components/monitoring/prometheus-rule.yaml"
HEADER = (
    "# GENERATED from deploy/prometheus/alerts.yml and slo.yml by `make prometheus-rule`: edit those, then\n"
    "# regenerate (a contract test fails while they differ). The Prometheus Operator loads it.\n"
)


def prometheus_rule() -> str:
    groups = [g for path in RULE_FILES for g in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]]
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "convocations"},
        "spec": {"groups": groups},
    }
    return HEADER + yaml.safe_dump(rule, sort_keys=False, allow_unicode=True, width=120)


if __name__ == "__main__":
    TARGET.write_text(prometheus_rule(), encoding="utf-8")
    sys.stdout.write(f"wrote {TARGET.relative_to(ROOT)}\n")
