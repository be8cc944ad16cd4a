"""Writes the published event contracts from the code: ``python -m devstack.contracts`` (``make contracts``).

- ``asyncapi.py``: the AsyncAPI 3.0 document and one JSON Schema per event, from the pydantic models
  (shared/contracts.py) and the producer/consumer table (shared/topology.py, read by ``parties.py``);
  ``examples.py`` builds their example messages.
- ``catalogue.py``: the catalogue for integrators (docs/contracts/README.md) from ``catalogue.md.j2``, its
  rejection reasons from their registry (shared/rejections.py); and the event table of
  docs/architecture.md, between its markers.

Nothing in docs/contracts/ is written by hand. The output is deterministic (fixed example ids and dates,
stable key order), so the contract tests can compare the checked-in files with a fresh run. ``--check``
exits non-zero instead of writing when the files differ.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from devstack.contracts.asyncapi import asyncapi, event_schema, to_json, to_yaml
from devstack.contracts.catalogue import readme, rejection_reasons, with_event_table
from devstack.contracts.parties import (
    EXCHANGE,
    PARTIES,
    ROOT,
    Party,
    consumers_of,
    events,
    producer_of,
    producers_of,
    schema_file,
)

__all__ = [
    "EXCHANGE",
    "PARTIES",
    "ROOT",
    "Party",
    "consumers_of",
    "differences",
    "producer_of",
    "producers_of",
    "rejection_reasons",
    "render",
    "write",
]

OUT = ROOT / "docs" / "contracts"
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def render() -> dict[str, str]:
    """Every generated file: path relative to docs/contracts/ -> content."""
    files = {f"schemas/{schema_file(event)}": to_json(event_schema(event)) for event in events()}
    files["asyncapi.yaml"] = to_yaml(asyncapi())
    files["README.md"] = readme()
    return files


def stale(out: Path, files: dict[str, str]) -> list[str]:
    """Files under ``out`` that a fresh generation would not write (a removed or renamed event)."""
    return sorted(
        str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and str(p.relative_to(out)) not in files
    )


def differences(out: Path = OUT, architecture: Path = ARCHITECTURE) -> list[str]:
    """What a fresh generation would change: files of docs/contracts/, and docs/architecture.md's event table."""
    files = render()
    changed = [
        name for name, text in files.items() if not (out / name).is_file() or (out / name).read_text("utf-8") != text
    ]
    text = architecture.read_text("utf-8")
    table = ["../architecture.md (its event table)"] if with_event_table(text) != text else []
    return changed + [f"{name} (not generated any more)" for name in stale(out, files)] + table


def write(out: Path = OUT, architecture: Path = ARCHITECTURE) -> list[str]:
    files = render()
    for name in stale(out, files) if out.exists() else []:
        (out / name).unlink()
    written = []
    for name, text in files.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(name)
    text = architecture.read_text("utf-8")
    if (fresh := with_event_table(text)) != text:
        architecture.write_text(fresh, "utf-8")
        written.append("../architecture.md")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.contracts", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/contracts/ is not up to date")
    args = parser.parse_args(argv)
    if args.check:
        drift = differences()
        for name in drift:
            print(f"out of date: docs/contracts/{name}")
        if drift:
            print("run `make contracts`")
        return 1 if drift else 0
    written = write()
    print(f"docs/contracts: {len(written)} file(s) written" + (f": {', '.join(written)}" if written else ""))
    return 0
