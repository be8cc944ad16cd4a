"""Write deploy/k8s/components/monitoring/prometheus-rule.yaml from deploy/prometheus/alerts.yml
(`make prometheus-rule`): one set of alert rules, for compose's Prometheus and the Operator alike."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
TARGET = ROOT / "deploy/k8s/components/monitoring/prometheus-rule.yaml"
HEADER = ("# GENERATED from deploy/prometheus/alerts.yml by `make prometheus-rule`: edit alerts.yml, then\n"
          "# regenerate (a contract test fails while the two differ). The Prometheus Operator loads it.\n")


def prometheus_rule() -> str:
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    rule = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": "convocations"}, "spec": {"groups": groups}}
    return HEADER + yaml.safe_dump(rule, sort_keys=False, allow_unicode=True, width=120)


if __name__ == "__main__":
    TARGET.write_text(prometheus_rule(), encoding="utf-8")
    sys.stdout.write(f"wrote {TARGET.relative_to(ROOT)}\n")
