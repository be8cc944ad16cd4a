"""scripts/bootstrap.sh behaves on a shared machine: it repairs a half-made virtualenv and never stops,
kills or resets a server it did not start. The machine's commands are replaced by stubs that record
their calls, so the script runs for real without touching this machine."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

STUB = """#!/bin/sh
echo "$(basename "$0") $*" >> "$CALLS"
case "$(basename "$0")" in
  rabbitmqctl) [ -n "$BROKER_WEDGED" ] && exit 1 ;;
  python3)
    if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
      mkdir -p "$3/bin"; printf '#!/bin/sh\\nexit 0\\n' > "$3/bin/python"
      printf '#!/bin/sh\\necho "pip $*" >> "$CALLS"\\n' > "$3/bin/pip"
      printf '#!/bin/sh\\necho "uv $*" >> "$CALLS"\\n' > "$3/bin/uv"
      chmod +x "$3/bin/python" "$3/bin/pip" "$3/bin/uv"
    fi ;;
esac
exit 0
"""


# A script under test may try to delete a server's data (`rm -rf /var/lib/...`): that must be recorded,
# never carried out. Only relative paths without `..` (the project's own .venv) are really removed.
RM_STUB = """#!/bin/sh
echo "rm $*" >> "$CALLS"
for arg in "$@"; do
  case "$arg" in
    -*) ;;
    /*|*..*|~*) exit 0 ;;
  esac
done
exec /bin/rm "$@"
"""


def _project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    (project / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts/bootstrap.sh", project / "scripts/bootstrap.sh")
    (project / "scripts/db-setup.sh").write_text('#!/bin/sh\necho "db-setup $*" >> "$CALLS"\n')
    (project / "scripts/db-setup.sh").chmod(0o755)
    (project / "requirements").mkdir()
    (project / "requirements/dev.lock").write_text("six==1.16.0 --hash=sha256:00\n")
    return project


def _run(project: Path, tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    stubs = tmp_path / "bin"
    stubs.mkdir(exist_ok=True)
    names = [
        "dpkg",
        "apt-get",
        "rabbitmq-server",
        "rabbitmq-diagnostics",
        "rabbitmqctl",
        "rabbitmq-plugins",
        "pg_isready",
        "pg_ctlcluster",
        "psql",
        "python3",
        "npm",
        "pkill",
        "kill",
        "killall",
        "rm",
        "sudo",
        "timeout",
    ]
    for name in names:
        path = stubs / name
        path.write_text(STUB if name not in ("timeout", "rm") else "")
        if name == "timeout":  # run the command it wraps (after the duration)
            path.write_text('#!/bin/sh\nshift\nexec "$@"\n')
        if name == "rm":  # record; really remove only relative paths, inside the throw-away project
            path.write_text(RM_STUB)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls.log"
    calls.write_text("")
    result = subprocess.run(
        ["bash", "scripts/bootstrap.sh", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": f"{stubs}:/usr/bin:/bin", "CALLS": str(calls), "HOME": str(tmp_path), **env},
    )
    return result, calls.read_text().splitlines()


def test_the_tests_bootstrap_needs_no_answer_from_the_machines_broker(tmp_path):
    """The tests run on a RabbitMQ node of their own: a wedged shared broker must not stop them."""
    project = _project(tmp_path)
    result, calls = _run(project, tmp_path, "--with-browser", BROKER_WEDGED="1", CI="true")

    assert result.returncode == 0, result.stderr
    assert not [c for c in calls if c.split()[0] in ("rabbitmqctl", "rabbitmq-server", "rabbitmq-plugins")]


def test_a_half_made_virtualenv_is_rebuilt_not_reused(tmp_path):
    project = _project(tmp_path)
    broken = project / ".venv/bin"
    broken.mkdir(parents=True)
    (broken / "python").write_text("#!/bin/sh\nexit 1\n")  # a venv whose interpreter no longer runs
    (broken / "python").chmod(0o755)

    result, calls = _run(project, tmp_path)

    assert result.returncode == 0, result.stderr
    assert "rebuilding" in result.stdout
    assert "python3 -m venv .venv" in calls
    installs = [c for c in calls if c.startswith(("pip install", "uv pip install"))]
    # The pinned uv first, with the venv's pip; then uv installs the lock, with hashes, compiled.
    assert installs == [
        "pip install -q --require-hashes -r requirements/uv.lock",
        "uv pip install -q --require-hashes --compile-bytecode --python .venv/bin/python -r requirements/dev.lock",
    ]
    assert (project / ".venv/.installed-lock").read_text() == "six==1.16.0 --hash=sha256:00\n"


def test_a_wedged_broker_is_reported_never_killed_or_reset(tmp_path):
    project = _project(tmp_path)
    result, calls = _run(project, tmp_path, BROKER_WEDGED="1", CI="true")

    assert result.returncode == 1
    assert "does not answer" in result.stderr
    assert not [c for c in calls if c.split()[0] in ("pkill", "kill", "killall")]
    assert not [c for c in calls if c.startswith("rm") and "rabbitmq" in c]
    assert not [c for c in calls if c.startswith("rabbitmqctl stop")]


def test_no_process_of_another_is_ever_killed_by_a_project_script():
    scripts = [ROOT / "Makefile", ROOT / ".ci/run", *sorted((ROOT / "scripts").glob("*.sh"))]
    for script in scripts:
        text = script.read_text()
        for forbidden in ("pkill", "killall", "rm -rf /var/lib"):
            assert forbidden not in text, f"{script.relative_to(ROOT)} uses {forbidden}"
    assert os.access(ROOT / "scripts/bootstrap.sh", os.X_OK)
