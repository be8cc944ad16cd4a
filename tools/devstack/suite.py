"""`make test`: the lint step and every test tier, as separate processes running side by side.

Each step is its own process; each pytest process imports tests/conftest.py afresh and so gets its own
test database, its own RabbitMQ node and its own stack of services, and shares nothing with the
others. A step's output goes to ``.run/test-logs/<step>.log``; a failed step's summary is printed when
it ends. Every step runs to its end, and any failure fails the whole. docs/testing.md has the tiers,
what each starts and how long each takes.

    python -m devstack.suite            # every step (what `make test` and CI run)
    python -m devstack.suite lint e2e   # only these steps
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from devstack.stack import ROOT

BIN = Path(sys.executable).parent
LOGS = ROOT / ".run" / "test-logs"


@dataclass(frozen=True)
class Step:
    name: str
    commands: tuple[tuple[str, ...], ...]  # run one after the other; the step fails if any of them fails
    what: str
    # Seconds after the first step: the steps that start servers and a stack do not all start them at
    # the same moment on two cores.
    delay: float = 0


def pytest(*args: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=10", *args)


# The end-to-end tests that start stacks of their own or wait on outages and retries: a step of their own,
# beside the rest of the tier (each step has its own session stack). The others of that kind (TLS to the relay,
# big letters, the audit's proxies, traces) run in the e2e step, which would otherwise end long before.
E2E_RESILIENCE = tuple(
    f"tests/e2e/{name}.py"
    for name in (
        "test_outages",
        "test_resilience",
        "test_sms_gateway",
        "test_prometheus",
        "test_every_copy",
    )
)
# The accessibility walks: a step of their own beside the other browser tests, which render one page at a time.
ACCESSIBILITY = "tests/browser/test_accessibility.py"
# Two end-to-end files of that kind (about 60 s under load) run after the walks, which end about two minutes
# before the other steps, rather than in e2e-resilience, then the longest step: the keys rotated on the session's
# stack, and replicas on stacks of their own.
AFTER_THE_WALKS = ("tests/e2e/test_key_rotation.py", "tests/e2e/test_replicas.py")
# The longest first: they start first. A tier that grows past the others gets a step of its own here.
STEPS = (
    Step(
        "e2e",
        (pytest("tests/e2e", *(f"--ignore={f}" for f in (*E2E_RESILIENCE, *AFTER_THE_WALKS))),),
        "the chain of services as processes",
    ),
    Step(
        "a11y+rotation",
        (pytest(ACCESSIBILITY, *AFTER_THE_WALKS),),
        "axe-core on every state of the patient's journey, keyboard only, every link and button; key rotation, replicas",
        delay=15,
    ),
    Step(
        "e2e-resilience",
        (pytest(*E2E_RESILIENCE),),
        "outages, restarts, SMS failover, alerts, every copy of a letter",
        delay=5,
    ),
    Step(
        "browser",
        (pytest("tests/browser", f"--ignore={ACCESSIBILITY}"),),
        "chromium on the portal and the console",
        delay=10,
    ),
    Step(
        "integration+production",
        (pytest("tests/integration", "tests/production"),),
        "handlers and plumbing on the real broker and database; the production overlay's settings",
        delay=20,
    ),
    Step(
        "lint",
        (
            (str(BIN / "ruff"), "check", "."),
            (str(BIN / "ruff"), "format", "--check", "--output-format", "concise", "."),
            (str(BIN / "mypy"),),
        ),
        "ruff check, ruff format --check, mypy",
        delay=30,
    ),
    Step("unit+contract", (pytest("tests/unit", "tests/contract"),), "no I/O; schemas, manifests, docs", delay=30),
)
SUMMARY = re.compile(r"^=*\s*((?:\d+ \w+,? )+)in [\d.]+s")
RESULT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)\b")


@dataclass
class Running:
    step: Step
    log: Path
    env: dict[str, str]
    started: float = field(default_factory=time.monotonic)
    process: subprocess.Popen[bytes] | None = None
    remaining: list[tuple[str, ...]] = field(default_factory=list)
    returncode: int = 0
    ended: float | None = None

    def next_command(self) -> bool:
        """Start the step's next command; False when none is left."""
        if not self.remaining:
            return False
        command = self.remaining.pop(0)
        with self.log.open("ab") as out:
            out.write(f"$ {' '.join(command)}\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        return True

    def poll(self) -> bool:
        """True once the step has ended."""
        if self.ended is not None:
            return True
        assert self.process is not None
        code = self.process.poll()
        if code is None:
            return False
        self.returncode = self.returncode or code
        if not self.next_command():
            self.ended = time.monotonic()
            return True
        return False

    def counts(self) -> dict[str, int]:
        """pytest's closing line in the step's log ("2 failed, 700 passed, 1 skipped in 40.1s") as
        {"failed": 2, "passed": 700, "skipped": 1}; errors count as failed."""
        for line in reversed(self.log.read_text(errors="replace").splitlines()):
            if match := SUMMARY.match(line):
                counts: dict[str, int] = {}
                for n, word in RESULT.findall(match.group(1)):
                    key = "failed" if word.startswith("error") else word
                    counts[key] = counts.get(key, 0) + int(n)
                return counts
        return {}


def step_env(step: Step) -> dict[str, str]:
    """The environment of one step: settings a developer gave for the whole run, made the step's own."""
    env = dict(os.environ)
    suffix = re.sub(r"\W+", "_", step.name)
    if "TEST_DATABASE" in env:  # one database per process: two steps would drop each other's
        env["TEST_DATABASE"] = f"{env['TEST_DATABASE']}_{suffix}"
    if "AMQP_URL" in env:  # a shared broker: one vhost per process
        env["TEST_AMQP_VHOST"] = f"{env.get('TEST_AMQP_VHOST', 'convocations-test')}-{suffix}"
    return env


def run(steps: tuple[Step, ...]) -> int:
    LOGS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    waiting = sorted(steps, key=lambda s: s.delay)
    first = waiting[0].delay if waiting else 0  # a step run alone starts at once
    running: list[Running] = []
    pending: list[Running] = []
    while waiting or pending:
        while waiting and waiting[0].delay - first <= time.monotonic() - started:
            step = waiting.pop(0)
            log = LOGS / f"{step.name}.log"
            log.unlink(missing_ok=True)
            r = Running(step, log, step_env(step), remaining=list(step.commands))
            r.next_command()
            running.append(r)
            pending.append(r)
            print(f"==> {step.name}: {step.what} (log: {log.relative_to(ROOT)})", flush=True)
        for r in [r for r in pending if r.poll()]:
            pending.remove(r)
            report(r)
        time.sleep(0.5)
    return summary(running, time.monotonic() - started)


def report(r: Running) -> None:
    took = (r.ended or time.monotonic()) - r.started
    counts = r.counts()
    figures = ", ".join(f"{n} {word}" for word, n in counts.items())
    print(
        f"<== {r.step.name}: {'ok' if r.returncode == 0 else 'FAILED'} in {took:.0f} s"
        f"{f' ({figures})' if figures else ''}",
        flush=True,
    )
    if r.returncode != 0:
        lines = r.log.read_text(errors="replace").splitlines()
        tail = _failure_summary(lines) or lines[-80:]
        print("\n".join(f"    {line}" for line in tail), flush=True)


def _failure_summary(lines: list[str]) -> list[str]:
    """pytest's short test summary (the failed tests and their first line), else nothing."""
    for i, line in enumerate(lines):
        if "short test summary info" in line:
            return lines[i:]
    return []


def summary(running: list[Running], took: float) -> int:
    total: dict[str, int] = {}
    print(f"\n{'step':<24} {'result':<7} {'seconds':>7}  tests")
    for r in running:
        counts = r.counts()
        for word, n in counts.items():
            total[word] = total.get(word, 0) + n
        seconds = (r.ended or time.monotonic()) - r.started
        print(
            f"{r.step.name:<24} {'ok' if r.returncode == 0 else 'FAILED':<7} {seconds:>7.0f}  "
            + ", ".join(f"{n} {word}" for word, n in counts.items())
        )
    failed_steps = [r.step.name for r in running if r.returncode != 0]
    print(f"whole run: {took:.0f} s" + (f"; failed: {', '.join(failed_steps)}" if failed_steps else ""))
    if any("pytest" in command for r in running for command in r.step.commands):
        # The closing line, as a test runner's: passed and failed tests over every step.
        extra = f", {total['skipped']} skipped" if total.get("skipped") else ""
        print(f"{total.get('passed', 0)} passed, {total.get('failed', 0)} failed{extra}")
    return 1 if failed_steps else 0


def main(argv: list[str]) -> int:
    by_name = {s.name: s for s in STEPS}
    unknown = [a for a in argv if a not in by_name]
    if unknown:
        print(f"unknown step {', '.join(unknown)}; steps: {', '.join(by_name)}", file=sys.stderr)
        return 2
    return run(tuple(by_name[a] for a in argv) if argv else STEPS)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
