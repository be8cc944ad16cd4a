"""`make test`'s steps (tools/devstack/suite.py) run every test file, each exactly once."""

from __future__ import annotations

from pathlib import Path

from devstack.suite import STEPS

ROOT = Path(__file__).resolve().parents[2]


def covering(path: str) -> list[str]:
    """The steps whose pytest command runs ``path`` (a test file, relative to the repository)."""
    steps = []
    for step in STEPS:
        for command in step.commands:
            if "pytest" not in command:
                continue
            args = command[command.index("pytest") + 1 :]
            ignored = {a.removeprefix("--ignore=") for a in args if a.startswith("--ignore=")}
            targets = [a for a in args if a.startswith("tests")]
            if path not in ignored and any(path == t or path.startswith(t.rstrip("/") + "/") for t in targets):
                steps.append(step.name)
    return steps


def test_every_test_file_runs_in_exactly_one_step():
    files = sorted(
        str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py") if "node_modules" not in p.parts
    )
    assert files
    assert {f: covering(f) for f in files if len(covering(f)) != 1} == {}
