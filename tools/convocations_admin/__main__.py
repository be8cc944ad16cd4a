"""convocations-admin dlq list | show | replay | purge | migrate (python -m convocations_admin, or make admin)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import datetime, timezone

from convocations_admin.dlq import DeadLetterOffice, EarlierShape, ReplayStopped, default_operator
from shared.settings import ServiceSettings


class AdminSettings(ServiceSettings):
    """AMQP_URL and EVENTS_EXCHANGE as the services read them, and the database where what the tool does
    is recorded (operations.dlq_action, as the role convocations_admin: deploy/postgres/init.sql)."""

    operations_database_url: str = "postgresql://convocations_admin:convocations_admin@127.0.0.1:5432/convocations"


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
    for name, text in (
        (
            "replay",
            "publish dead letters back to their original queue after a fix; stops, "
            "keeping them, if that queue does not exist",
        ),
        ("purge", "remove dead letters for good, recording who and why"),
    ):
        cmd = dlq.add_parser(name, help=text)
        cmd.add_argument("queue")
        chosen = cmd.add_mutually_exclusive_group(required=True)
        chosen.add_argument("--id", dest="ids", action="append", metavar="EVENT_ID", help="repeatable")
        chosen.add_argument("--all", action="store_true", help="every dead letter of the queue (asks first)")
        cmd.add_argument("--dry-run", action="store_true", help="say what would be done, do nothing")
        cmd.add_argument("--yes", action="store_true", help="--all without asking (scripts)")
        cmd.add_argument("--operator", default=default_operator(), help="who (default: CONVOCATIONS_OPERATOR or $USER)")
        if name == "purge":
            cmd.add_argument("--reason", required=True, help="why these events must never be processed")
    migrate = dlq.add_parser("migrate", help="move the DLQs of an earlier release (quorum queues) to classic queues")
    migrate.add_argument("--dry-run", action="store_true", help="say which DLQs would be moved, do nothing")
    migrate.add_argument("--yes", action="store_true", help="without asking (scripts)")
    migrate.add_argument("--operator", default=default_operator(), help="who (default: CONVOCATIONS_OPERATOR or $USER)")
    return p


def confirmed(question: str, answer: str, yes: bool) -> bool:
    """``--yes``, or the operator types ``answer`` at the terminal. Without a terminal: no."""
    if yes:
        return True
    if not sys.stdin.isatty():
        print(
            f"{question}\nNot confirmed: no terminal to ask on. Run again with --yes to confirm, or --dry-run "
            "to see what would be done.",
            file=sys.stderr,
        )
        return False
    return input(f"{question}\nType {answer} to go ahead: ").strip() == answer


async def run(args: argparse.Namespace, settings: AdminSettings) -> int:
    operator = getattr(args, "operator", None) or default_operator()
    async with DeadLetterOffice(
        settings.amqp_url, settings.events_exchange, settings.operations_database_url, operator
    ) as office:
        try:
            return await _command(args, settings, office)
        except EarlierShape as earlier:
            print(
                f"{earlier} is a dead-letter queue of an earlier release (a quorum queue): looking at it would "
                "count deliveries towards its limit. Run `convocations-admin dlq migrate` first.",
                file=sys.stderr,
            )
            return 1


async def _command(args: argparse.Namespace, settings: AdminSettings, office: DeadLetterOffice) -> int:
    now = datetime.now(timezone.utc)
    if args.command == "list":
        listed = 0
        async for d in office.letters(args.queue):
            listed += 1
            if args.json:
                print(
                    json.dumps(
                        {
                            "queue": d.queue,
                            "event_id": d.event_id,
                            "type": d.event_type,
                            "reason": d.reason,
                            "detail": d.detail,
                            "age_seconds": d.age_seconds(now),
                        }
                    )
                )
            else:
                print(
                    f"{d.queue}  {d.event_id}  {d.event_type}  {d.reason}  {_age(d.age_seconds(now))}  {d.detail[:120]}"
                )
        earlier = await office.earlier_shape(list(await office.depths(args.queue)))
        for queue in earlier:
            print(
                f"{queue}: a dead-letter queue of an earlier release, not read (convocations-admin dlq migrate)",
                file=sys.stderr,
            )
        if not listed and not args.json:
            print("no dead letters")
        return 0
    if args.command == "show":
        letter, outline = await office.show(args.queue, args.event_id)
        print(
            json.dumps(
                {
                    "reason": letter.reason,
                    "detail": letter.detail,
                    "age_seconds": letter.age_seconds(now),
                    "original_queue": letter.original_queue,
                    **outline,
                },
                indent=2,
                default=str,
            )
        )
        return 0
    if args.command == "migrate":
        return await _migrate(args, office)
    ids = None if args.all else set(args.ids)
    if args.all or args.dry_run:
        # What --all means: the letters there now, named by id (one arriving meanwhile waits for next time).
        chosen = [d async for d in office.letters(args.queue) if ids is None or d.event_id in ids]
        verb = "replay to their original queue" if args.command == "replay" else "purge for good"
        for d in chosen:
            print(f"would {args.command} {d.event_id} ({d.event_type}, {d.reason})")
        if args.dry_run:
            print(f"dry run: {len(chosen)} dead letter(s) would be {PAST[args.command]}; nothing was changed")
            return 0
        if not chosen:
            print(f"no dead letters in {args.queue}")
            return 0
        if not confirmed(f"{verb.capitalize()}: {len(chosen)} dead letter(s) of {args.queue}.", args.queue, args.yes):
            print("nothing was changed", file=sys.stderr)
            return 2
        ids = {d.event_id for d in chosen}
    if args.command == "replay":
        try:
            done = await office.replay(args.queue, ids)
        except ReplayStopped as stop:
            _report(stop.replayed, args.command)
            recorded = "; recorded in operations.dlq_action" if stop.replayed else ""
            print(
                f"replay stopped at {stop.letter.event_id}: {stop.problem}. It and the dead letters not "
                f"replayed yet stay on {args.queue}; {stop.advice}.\n{len(stop.replayed)} dead letter(s) "
                f"replayed before it{recorded}",
                file=sys.stderr,
            )
            return 1
    else:
        done = await office.purge(args.queue, ids, args.reason)
    _report(done, args.command)
    missing = (ids or set()) - {d.event_id for d in done}
    if missing:
        print(f"not found in {args.queue}: {', '.join(sorted(missing))}", file=sys.stderr)
        return 1
    print(f"{len(done)} dead letter(s) {PAST[args.command]}; recorded in operations.dlq_action")
    return 0


async def _migrate(args: argparse.Namespace, office: DeadLetterOffice) -> int:
    depths = await office.depths()
    earlier = await office.earlier_shape(list(depths))
    for queue in earlier:
        print(f"{'would move' if args.dry_run else 'to move'} {queue} ({depths[queue]} letter(s)) to a classic queue")
    if not earlier:
        print("every dead-letter queue is already a classic queue")
        return 0
    if args.dry_run:
        print(f"dry run: {len(earlier)} queue(s) would be moved; nothing was changed")
        return 0
    if not confirmed(f"Move {len(earlier)} dead-letter queue(s) to classic queues.", "migrate", args.yes):
        print("nothing was changed", file=sys.stderr)
        return 2
    for queue in earlier:
        print(f"moved {queue}: {await office.migrate(queue)} letter(s), recorded in operations.dlq_action")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return asyncio.run(run(args, AdminSettings()))


if __name__ == "__main__":
    sys.exit(main())
