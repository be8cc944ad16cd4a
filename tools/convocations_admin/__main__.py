"""convocations-admin dlq list | show | replay | purge (python -m convocations_admin, or make admin)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from convocations_admin.dlq import DeadLetterOffice, ReplayStopped, default_operator
from shared.settings import ServiceSettings


class AdminSettings(ServiceSettings):
    """AMQP_URL and EVENTS_EXCHANGE as the services read them, plus where purges and replays are recorded."""

    dlq_audit_log: Path = Path("dlq-audit.jsonl")


PAST = {"replay": "replayed", "purge": "purged"}


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _report(done: list, command: str) -> None:
    for d in done:
        print(f"{PAST[command]} {d.event_id} ({d.event_type}, {d.reason})")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="convocations-admin", description=__doc__)
    commands = p.add_subparsers(dest="area", required=True)
    dlq = commands.add_parser("dlq", help="dead-letter queues").add_subparsers(dest="command", required=True)
    listing = dlq.add_parser("list", help="dead letters per queue with their reason and age")
    listing.add_argument("queue", nargs="?", help="one DLQ (default: every consumer queue's DLQ)")
    listing.add_argument("--json", action="store_true", help="one JSON object per dead letter")
    show = dlq.add_parser("show", help="one dead letter: reason, headers, envelope (never the patient data)")
    show.add_argument("queue")
    show.add_argument("event_id")
    for name, text in (("replay", "publish dead letters back to their original queue after a fix; stops, "
                                  "keeping them, if that queue does not exist"),
                       ("purge", "remove dead letters for good, recording who and why")):
        cmd = dlq.add_parser(name, help=text)
        cmd.add_argument("queue")
        chosen = cmd.add_mutually_exclusive_group(required=True)
        chosen.add_argument("--id", dest="ids", action="append", metavar="EVENT_ID", help="repeatable")
        chosen.add_argument("--all", action="store_true")
        cmd.add_argument("--operator", default=default_operator(), help="who (default: CONVOCATIONS_OPERATOR or $USER)")
        if name == "purge":
            cmd.add_argument("--reason", required=True, help="why these events must never be processed")
    return p


async def run(args: argparse.Namespace, settings: AdminSettings) -> int:
    operator = getattr(args, "operator", None) or default_operator()
    async with DeadLetterOffice(settings.amqp_url, settings.events_exchange, settings.dlq_audit_log, operator) as office:
        now = datetime.now(timezone.utc)
        if args.command == "list":
            letters = await office.letters(args.queue)
            if args.json:
                for d in letters:
                    print(json.dumps({"queue": d.queue, "event_id": d.event_id, "type": d.event_type,
                                      "reason": d.reason, "detail": d.detail, "age_seconds": d.age_seconds(now)}))
                return 0
            if not letters:
                print("no dead letters")
            for d in letters:
                print(f"{d.queue}  {d.event_id}  {d.event_type}  {d.reason}  {_age(d.age_seconds(now))}  {d.detail[:120]}")
            return 0
        if args.command == "show":
            letter, outline = await office.show(args.queue, args.event_id)
            print(json.dumps({"reason": letter.reason, "detail": letter.detail, "age_seconds": letter.age_seconds(now),
                              "original_queue": letter.original_queue, **outline}, indent=2, default=str))
            return 0
        ids = None if args.all else set(args.ids)
        if args.command == "replay":
            try:
                done = await office.replay(args.queue, ids)
            except ReplayStopped as stop:
                _report(stop.replayed, args.command)
                recorded = f"; recorded in {settings.dlq_audit_log}" if stop.replayed else ""
                print(f"replay stopped at {stop.letter.event_id}: {stop.problem}. It and the dead letters not "
                      f"replayed yet stay on {args.queue}; {stop.advice}.\n{len(stop.replayed)} dead letter(s) "
                      f"replayed before it{recorded}", file=sys.stderr)
                return 1
        else:
            done = await office.purge(args.queue, ids, args.reason)
        _report(done, args.command)
        missing = (ids or set()) - {d.event_id for d in done}
        if missing:
            print(f"not found in {args.queue}: {', '.join(sorted(missing))}", file=sys.stderr)
            return 1
        print(f"{len(done)} dead letter(s) {PAST[args.command]}; recorded in {settings.dlq_audit_log}")
        return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return asyncio.run(run(args, AdminSettings()))


if __name__ == "__main__":
    sys.exit(main())
