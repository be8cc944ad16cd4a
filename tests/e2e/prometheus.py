"""A real Prometheus (Debian's) and blackbox exporter watching the end-to-end tier's live services.

The rules it evaluates are deploy/prometheus/alerts.yml and slo.yml on a test's time scale, derived
mechanically by :func:`on_test_time`: every duration (range windows, ``offset``, ``for:``) and every
threshold compared with a value in seconds is divided by ``TIME_SCALE`` (60: a minute becomes a second)
and kept between a few scrapes and half a minute (3 days and 6 hours both become 30 s: the windows of a
burn-rate pair then overlap, which only makes them easier to satisfy together). Expressions, label
matchers and thresholds of counts, ratios and bytes stay exactly as shipped. Prometheus scrapes and
evaluates every second.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import yaml

from devstack.stack import free_port, http

ROOT = Path(__file__).resolve().parents[2]
RULE_FILES = (ROOT / "deploy/prometheus/alerts.yml", ROOT / "deploy/prometheus/slo.yml")
TIME_SCALE = 60
WINDOW = (5.0, 30.0)  # seconds: a range holds at least five 1-second scrapes
FOR = (1.0, 30.0)
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = r"(\d+)(ms|[smhdw])"


def seconds(text: str) -> float:
    match = re.fullmatch(_DURATION, text)
    assert match, f"not a duration: {text}"
    return int(match[1]) * _UNITS[match[2]]


def scaled(value: float, bounds: tuple[float, float]) -> str:
    low, high = bounds
    return f"{round(min(max(value / TIME_SCALE, low), high) * 1000)}ms"


def on_test_time(rule: dict) -> dict:
    """The shipped rule with its durations and seconds thresholds divided by TIME_SCALE."""
    expr = re.sub(r"\[" + _DURATION + r"\]", lambda m: f"[{scaled(seconds(m[1] + m[2]), WINDOW)}]", rule["expr"])
    expr = re.sub(r"\boffset " + _DURATION, lambda m: f"offset {scaled(seconds(m[1] + m[2]), WINDOW)}", expr)
    # A threshold on a value in seconds: an age (`..._seconds) > N`) or a time since (`time() - ... > N`).
    expr = re.sub(
        r"((?:_seconds\b|time\(\)).*?\)*\s*>\s*)(\d+)\b",
        lambda m: f"{m[1]}{min(max(int(m[2]) / TIME_SCALE, WINDOW[0]), WINDOW[1]):g}",
        expr,
    )
    copy = {**rule, "expr": expr}
    if "for" in rule:
        copy["for"] = scaled(seconds(rule["for"]), FOR)
    return copy


def rule_groups() -> list[dict]:
    return [g for path in RULE_FILES for g in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]]


def test_rules() -> dict:
    return {"groups": [{**g, "rules": [on_test_time(r) for r in g["rules"]]} for g in rule_groups()]}


def _binary(name: str) -> str:
    found = shutil.which(name) or f"/usr/bin/{name}"
    if not Path(found).exists():
        raise AssertionError(f"{name} is not installed: scripts/bootstrap.sh --with-browser installs it")
    return found


class Prometheus:
    """Prometheus and a blackbox exporter, each on a free port, configured by :meth:`configure`."""

    def __init__(self, home: Path, services: dict[str, list[str]], broker_port: int | None) -> None:
        self.home, self.port, self.blackbox_port = home, free_port(), free_port()
        self.services, self.broker_port = services, broker_port  # name: base URLs; the broker's metrics
        self.url = f"http://127.0.0.1:{self.port}"
        self.processes: list[subprocess.Popen] = []
        self.started = time.time()

    def start(self) -> Prometheus:
        (self.home / "rules.yml").write_text(yaml.safe_dump(test_rules(), sort_keys=False))
        (self.home / "blackbox.yml").write_text(
            yaml.safe_dump({"modules": {"http_2xx": {"prober": "http", "timeout": "2s"}}})
        )
        self.watch(self.services, reload=False)
        self.processes.append(
            subprocess.Popen(
                [
                    _binary("prometheus-blackbox-exporter"),
                    f"--config.file={self.home / 'blackbox.yml'}",
                    f"--web.listen-address=127.0.0.1:{self.blackbox_port}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=(self.home / "blackbox.log").open("w"),
            )
        )
        self.processes.append(
            subprocess.Popen(
                [
                    _binary("prometheus"),
                    f"--config.file={self.home / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.home / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1h",
                    "--web.enable-lifecycle",
                ],
                stdout=subprocess.DEVNULL,
                stderr=(self.home / "prometheus.log").open("w"),
            )
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if http("GET", f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            for process in self.processes:
                assert process.poll() is None, (self.home / "prometheus.log").read_text()[-2000:]
            time.sleep(0.1)
        raise TimeoutError("Prometheus did not become ready")

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()

    def watch(self, services: dict[str, list[str]], *, reload: bool = True) -> None:
        """Scrape and probe these services (name: base URLs) from now on, with the broker."""
        (self.home / "prometheus.yml").write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
                    "rule_files": [str(self.home / "rules.yml")],
                    **scrape_configs(services, self.blackbox_port, self.broker_port),
                }
            )
        )
        if reload:
            answer = http("POST", f"{self.url}/-/reload", timeout=10)
            assert answer.status_code == 200, answer.text

    def query(self, promql: str) -> list[dict]:
        answer = http("GET", f"{self.url}/api/v1/query", params={"query": promql}, timeout=10).json()
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def value(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def series(self, selector: str) -> list[dict[str, str]]:
        """Every label set matching ``selector`` scraped or recorded since this Prometheus started."""
        answer = http(
            "GET", f"{self.url}/api/v1/series", params={"match[]": selector, "start": self.started}, timeout=30
        ).json()
        assert answer["status"] == "success", answer
        return answer["data"]

    def firing(self) -> list[dict]:
        alerts = http("GET", f"{self.url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
        return [a for a in alerts if a["state"] == "firing"]


def scrape_configs(services: dict[str, list[str]], blackbox_port: int, broker_port: int | None) -> dict:
    """The shipped jobs (deploy/prometheus/prometheus.yml) pointed at this run's processes:
    ``services`` maps a service name to its base URLs (a replica adds one)."""
    hosts = {name: [url.removeprefix("http://") for url in urls] for name, urls in services.items()}
    jobs = [
        {
            "job_name": "convocations",
            "honor_labels": True,
            "static_configs": [{"targets": targets, "labels": {"service": name}} for name, targets in hosts.items()],
        },
        {
            "job_name": "convocations-readiness",
            "metrics_path": "/probe",
            "params": {"module": ["http_2xx"]},
            "static_configs": [
                {"targets": [f"{url}/readyz" for url in urls], "labels": {"service": name}}
                for name, urls in services.items()
            ],
            "relabel_configs": [
                {"source_labels": ["__address__"], "target_label": "__param_target"},
                {"source_labels": ["__param_target"], "target_label": "instance"},
                {"target_label": "__address__", "replacement": f"127.0.0.1:{blackbox_port}"},
            ],
        },
    ]
    if broker_port is not None:
        jobs += [
            {"job_name": "rabbitmq", "static_configs": [{"targets": [f"127.0.0.1:{broker_port}"]}]},
            {
                "job_name": "rabbitmq-queues",
                "metrics_path": "/metrics/detailed",
                "params": {"family": ["queue_coarse_metrics", "queue_consumer_count"]},
                "static_configs": [{"targets": [f"127.0.0.1:{broker_port}"]}],
            },
        ]
    return {"scrape_configs": jobs}
