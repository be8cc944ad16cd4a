"""The events the gateway publishes (through the outbox, in the caller's transaction)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import asyncpg

from shared.contracts import SmsFailedV1, SmsSentV1, envelope
from shared.outbox import add_event

PRODUCER = "sms-gateway"


@dataclass(frozen=True)
class CodeSms:
    """Which code an SMS carries: the ids every sms.* event repeats."""

    challenge_id: uuid.UUID
    message_id: uuid.UUID
    convocation_id: uuid.UUID
    otp_event_id: uuid.UUID | None

    @classmethod
    def of_row(cls, row) -> CodeSms:
        return cls(row["challenge_id"], row["message_id"], row["convocation_id"], row["otp_event_id"])


async def add_sms_sent(
    conn: asyncpg.Connection, sms: CodeSms, provider: str, provider_message_id: str, sent_at: datetime
) -> None:
    await add_event(
        conn,
        envelope(
            SmsSentV1(
                challenge_id=sms.challenge_id,
                message_id=sms.message_id,
                convocation_id=sms.convocation_id,
                provider=provider,
                provider_message_id=provider_message_id,
                sent_at=sent_at,
            ),
            producer=PRODUCER,
            correlation_id=sms.convocation_id,
            causation_id=sms.otp_event_id,
        ),
    )


async def add_sms_failed(conn: asyncpg.Connection, sms: CodeSms, provider: str, code: str | None, reason: str) -> None:
    await add_event(
        conn,
        envelope(
            SmsFailedV1(
                challenge_id=sms.challenge_id,
                message_id=sms.message_id,
                convocation_id=sms.convocation_id,
                provider=provider,
                provider_code=code,
                reason=reason[:500],
                failed_at=datetime.now(timezone.utc),
            ),
            producer=PRODUCER,
            correlation_id=sms.convocation_id,
            causation_id=sms.otp_event_id,
        ),
    )
