"""``make bench-letter``: what rendering a letter costs the issuer, printed, never asserted.

The issuer renders a letter for every convocation that comes without the hospital's PDF. Each renderer runs
in a fresh process (as in the issuer, it is imported at the first letter): resident memory before the import,
after it and after ``-n`` letters (and the peak), the first letter's time and the median of the others. The
tagged WeasyPrint renderer (issuer.render) is measured next to the untagged fpdf2 renderer it replaced, taken
from the repository's history (``git show``) when fpdf2 is installed, in the same run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from devstack.stack import ROOT

# A commit of main with the fpdf2 renderer (services/issuer/issuer/render/, before the tagged letter).
FPDF2_COMMIT = "d18d8eb"
FPDF2_FILES = ("__init__.py", "fonts.py", "letter.py")


def rss_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(renderer: str, n: int) -> dict:
    """Runs in the measured process: import the renderer, render n + 1 letters, report."""
    from devstack.sample import convocation_event
    from shared.contracts import ConvocationCreatedV1

    letter = ConvocationCreatedV1.model_validate(convocation_event(pdf=None, language="de")["data"])
    now = datetime(2026, 12, 1, 9, tzinfo=timezone.utc)
    before = rss_mb()
    module = "issuer.render" if renderer == "weasyprint" else "oldrender"
    render_convocation_pdf = importlib.import_module(module).render_convocation_pdf
    imported = rss_mb()
    times, size = [], 0
    for _ in range(n + 1):
        t = time.perf_counter()
        size = len(render_convocation_pdf(letter, hospital_name="Hôpitaux Universitaires de Genève", now=now))
        times.append(time.perf_counter() - t)
    return {
        "before": before,
        "imported": imported,
        "after": rss_mb(),
        "peak": rss_mb("VmHWM"),
        "first_ms": times[0] * 1000,
        "median_ms": statistics.median(times[1:]) * 1000,
        "bytes": size,
    }


def old_renderer(directory: Path) -> bool:
    """The fpdf2 renderer as a package ``oldrender`` in ``directory``; False when it cannot run here."""
    try:
        import fpdf  # noqa: F401
    except ImportError:
        return False
    package = directory / "oldrender"
    package.mkdir()
    for name in FPDF2_FILES:
        shown = subprocess.run(
            ["git", "show", f"{FPDF2_COMMIT}:services/issuer/issuer/render/{name}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if shown.returncode != 0:
            return False
        (package / name).write_text(shown.stdout)
    (directory / "locale").symlink_to(ROOT / "services/issuer/issuer/locale")  # its catalogs, one level up
    return True


def measure(renderer: str, n: int, extra_path: str = "") -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (extra_path, os.environ.get("PYTHONPATH", "")) if p)}
    done = subprocess.run(
        [sys.executable, "-m", "devstack.letterbench", "--child", renderer, "-n", str(n)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=50, help="letters per renderer after the first")
    parser.add_argument("--child", choices=["weasyprint", "fpdf2"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.n)))
        return
    load = os.getloadavg()[0]
    print(
        f"One letter (German, one page), each renderer in a fresh process, n={args.n}; {os.cpu_count()} cores, "
        f"load average {load:.1f}{' (busy machine: the figures are indicative)' if load > 1 else ''}"
    )
    results = {"WeasyPrint, tagged PDF/UA-1": measure("weasyprint", args.n)}
    with tempfile.TemporaryDirectory() as scratch:
        if old_renderer(Path(scratch)):
            results["fpdf2 (before), untagged"] = measure("fpdf2", args.n, scratch)
        else:
            print("  fpdf2 (the renderer before) is not installed here or not in this clone's history: not measured")
    for name, r in results.items():
        print(
            f"  {name:<28} first {r['first_ms']:7.1f} ms, then {r['median_ms']:6.1f} ms/letter; {r['bytes'] / 1024:5.1f} KB;"
            f" RSS {r['before']:5.1f} MB before import, {r['imported']:5.1f} after, {r['after']:5.1f} after the"
            f" letters (peak {r['peak']:5.1f})"
        )


if __name__ == "__main__":
    main()
