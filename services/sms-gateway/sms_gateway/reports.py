"""Delivery reports: move an SMS forward (never back) and turn a final failure into sms.failed.

A report can arrive before the send that produced its message id has committed (the provider
answers, then calls back within milliseconds). The webhook therefore looks for the SMS a few times
before it stores the report as *unmatched*; the send applies any unmatched report of its message
id before committing.
"""

from __future__ import annotations

import asyncio

import asyncpg

from shared.logs import get_logger
from sms_gateway import store
from sms_gateway.events import CodeSms, add_sms_failed
from sms_gateway.metrics import SMS_FINAL, SMS_REPORTS
from sms_gateway.rules import Report, next_status

log = get_logger(__name__)
UNMATCHED_PAUSES = (0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0)  # about 3.5 s in all


def failure_reason(report: Report) -> str:
    code = f" (provider error {report.error_code})" if report.error_code else ""
    return f"{report.provider_status}: the provider could not deliver the SMS{code}"


async def apply_report(conn: asyncpg.Connection, report: Report) -> str:
    """applied | stale (would move it back, or repeats) | ignored (a status we do not track) | unmatched."""
    row = await store.lock_sms_by_provider_message(conn, report.provider, report.provider_message_id)
    if row is None:
        return "unmatched"
    if report.status is None:
        return "ignored"
    new = next_status(row["status"], report.status)
    if new is None:
        return "stale"
    failed = new == "failed"
    await store.set_status(
        conn,
        row["challenge_id"],
        new,
        error_code=report.error_code if failed else None,
        last_error=failure_reason(report) if failed else None,
        final=new in ("delivered", "failed"),
    )
    if failed:
        await add_sms_failed(conn, CodeSms.of_row(row), report.provider, report.error_code, failure_reason(report))
    if new in ("delivered", "failed"):
        SMS_FINAL.labels(report.provider, new).inc()
    log.info(
        "sms delivery report applied",
        challenge_id=str(row["challenge_id"]),
        correlation_id=str(row["convocation_id"]),
        provider=report.provider,
        status=new,
        error_code=report.error_code,
    )
    return "applied"


async def record_report(pool: asyncpg.Pool, report: Report) -> str:
    """Apply an authenticated report in its own transaction and keep it; returns the outcome."""
    for pause in (*UNMATCHED_PAUSES, None):
        async with pool.acquire() as conn, conn.transaction():
            outcome = await apply_report(conn, report)
            if outcome != "unmatched" or pause is None:
                await store.insert_report(conn, report, outcome)
                break
        await asyncio.sleep(pause)
    SMS_REPORTS.labels(report.provider, outcome).inc()
    if outcome == "unmatched":
        log.warning(
            "delivery report for an unknown message kept",
            provider=report.provider,
            provider_message_id=report.provider_message_id,
            provider_status=report.provider_status,
        )
    return outcome


async def apply_early_reports(conn: asyncpg.Connection, provider: str, provider_message_id: str) -> None:
    """Reports that arrived before this send was recorded (same transaction as the send)."""
    for row in await store.unmatched_reports(conn, provider, provider_message_id):
        report = Report(provider, provider_message_id, row["provider_status"], row["error_code"])
        await store.set_report_outcome(conn, row["id"], await apply_report(conn, report))
