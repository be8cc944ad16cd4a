"""SMS gateway handler: otp.requested -> one SMS through a provider -> sms.sent, or sms.failed.

The sms row guards against a second SMS: once a provider accepted the code (or it failed for good),
a redelivered or retried otp.requested changes nothing. A crash between the provider's acceptance
and the commit is the one window where the code may be texted twice (docs/architecture.md#reliability).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

import asyncpg

from shared import crypto, erasure, rejections
from shared.consumer import Delivery, Rejected
from shared.contracts import OtpRequestedV1, PatientErasedV1
from shared.logs import get_logger
from shared.metrics import CODE_HANDOFF, on_commit, reached
from shared.retry import RetryPolicy, schedule_retry
from sms_gateway import rules, store
from sms_gateway.events import CodeSms, add_sms_failed, add_sms_sent
from sms_gateway.metrics import SMS_ATTEMPTS, SMS_BLOCKED, SMS_FINAL
from sms_gateway.providers import Accepted, Provider, ProviderError
from sms_gateway.reports import apply_early_reports
from sms_gateway.settings import SmsSettings
from sms_gateway.text import otp_text

log = get_logger(__name__)
CALLBACK_PATHS = {"twilio": "/webhooks/twilio/status", "generic": "/webhooks/generic/status"}


@dataclass(frozen=True)
class Outgoing:
    """One attempt at texting a code: what the sms row records (never the number or the code)."""

    sms: CodeSms
    phone_hash: str
    country: str | None
    attempt: int
    # The number's hash under every SMS_FIELD_KEY key: rows written before a rotation still count.
    phone_hashes: tuple[str, ...] = ()

    def row(self, **fields) -> dict:
        s = self.sms
        return dict(
            challenge_id=s.challenge_id,
            message_id=s.message_id,
            convocation_id=s.convocation_id,
            otp_event_id=s.otp_event_id,
            phone_hash=self.phone_hash,
            country=self.country,
            attempts=self.attempt,
            **fields,
        )


class SmsHandlers:
    def __init__(self, settings: SmsSettings, providers: list[Provider], sandbox: Provider | None = None) -> None:
        self.settings, self.providers, self.sandbox = settings, providers, sandbox
        self.retry = RetryPolicy.parse(settings.sms_retry_delays)

    async def on_patient_erased(self, conn: asyncpg.Connection, d: Delivery[PatientErasedV1]) -> None:
        """The patient asked for their data to be erased: their SMS go, and the gateway says so."""
        rows = await store.erase(conn, d.data.convocation_ids)
        await erasure.confirm_erased(conn, "sms-gateway", d, rows)

    async def on_otp_requested(self, conn: asyncpg.Connection, d: Delivery[OtpRequestedV1]) -> None:
        o = d.data
        row = await store.lock_sms(conn, o.challenge_id)
        if d.attempt and row is None:
            # A delayed retry of an SMS whose row is gone: the patient's data was erased on request.
            log.info("retry of an erased SMS dropped", attempt=d.attempt)
            return
        if row is not None and row["status"] != "retrying":
            log.info("code already handled; not texting again", challenge_id=str(o.challenge_id), status=row["status"])
            return
        phone, code = self.open_secret(o)
        out = self.outgoing(d, phone, attempt=(row["attempts"] if row else 0) + 1)
        if refusal := await self.refusal(conn, o, out):
            await self.refuse(conn, out, refusal)
            return
        if o.sandbox and self.sandbox is None:  # a sandbox test never reaches the real provider
            await self.fail(
                conn,
                out,
                ProviderError("none", True, "sandbox-not-configured", "sandbox test and no SANDBOX_SMS_PROVIDER_URL"),
            )
            return
        provider = self.sandbox if o.sandbox and self.sandbox else self.provider_for(out.attempt)
        try:
            accepted = await provider.send(
                phone,
                otp_text(
                    o.language, code, o.portal_host, hospital=self.settings.sms_hospital_name, expires_at=o.expires_at
                ),
                reference=str(o.challenge_id),
                status_callback=None if o.sandbox else self.callback_url(provider),
            )
        except ProviderError as err:
            await self.attempt_failed(conn, d, out, err)
            return
        await self.record_accepted(conn, out, accepted, requested_at=d.envelope.occurred_at)

    def outgoing(self, d: Delivery[OtpRequestedV1], phone: str, *, attempt: int) -> Outgoing:
        o = d.data
        return Outgoing(
            CodeSms(o.challenge_id, o.message_id, o.convocation_id, d.envelope.event_id),
            crypto.keyed_hash(self.settings.sms_field_key, "phone", phone),
            rules.country_of(phone),
            attempt,
            tuple(crypto.keyed_hashes(self.settings.sms_field_key, "phone", phone)),
        )

    def provider_for(self, attempt: int) -> Provider:
        return self.providers[
            rules.provider_for_attempt(attempt, self.settings.sms_failover_after, len(self.providers))
        ]

    def open_secret(self, o: OtpRequestedV1) -> tuple[str, str]:
        try:
            secret = crypto.open_field(
                self.settings.sms_field_key,
                o.for_sms,
                context=crypto.field_context("otp.requested", o.challenge_id, "sms"),
            )
            return str(secret["phone"]), str(secret["code"])
        except (crypto.CannotOpen, KeyError, ValueError) as exc:  # wrong SMS_FIELD_KEY or a forged field
            raise Rejected(rejections.UNREADABLE_SECRET, f"for_sms does not open: {type(exc).__name__}") from None

    def callback_url(self, provider: Provider) -> str | None:
        base = self.settings.sms_callback_base_url
        return f"{base.rstrip('/')}{CALLBACK_PATHS[provider.name]}" if base else None

    async def refusal(self, conn: asyncpg.Connection, o: OtpRequestedV1, out: Outgoing) -> rules.Refusal | None:
        now = datetime.now(timezone.utc)
        await store.lock_number(conn, out.phone_hash)
        hour_ago = now - timedelta(hours=1)
        return rules.refusal(
            now=now,
            expires_at=o.expires_at,
            country=out.country,
            allowed_countries=self.settings.allowed_countries,
            sent_to_number_last_hour=await store.count_sent_since(conn, hour_ago, out.phone_hashes),
            max_per_number_hour=self.settings.sms_max_per_number_hour,
            sent_last_hour=await store.count_sent_since(conn, hour_ago),
            max_global_hour=self.settings.sms_max_global_hour,
        )

    async def refuse(self, conn: asyncpg.Connection, out: Outgoing, refusal: rules.Refusal) -> None:
        SMS_BLOCKED.labels(refusal.code).inc()
        SMS_ATTEMPTS.labels("none", "blocked").inc()
        log.warning("sms blocked", challenge_id=str(out.sms.challenge_id), reason=refusal.code, country=out.country)
        # Not a provider attempt: the row keeps the count of attempts actually made.
        await self.fail(
            conn,
            replace(out, attempt=out.attempt - 1),
            ProviderError("none", True, refusal.code, f"{refusal.code}: {refusal.detail}"),
        )

    async def attempt_failed(self, conn: asyncpg.Connection, d: Delivery, out: Outgoing, err: ProviderError) -> None:
        outcome = "permanent" if err.permanent else "transient"
        delay = (
            None
            if err.permanent
            else rules.retry_delay(
                self.retry.delays, out.attempt, self.settings.sms_failover_after, len(self.providers)
            )
        )
        if delay is None:
            SMS_ATTEMPTS.labels(err.provider, "permanent" if err.permanent else "exhausted").inc()
            await self.fail(conn, out, err)
        else:
            SMS_ATTEMPTS.labels(err.provider, "transient").inc()
            await store.save_sms(
                conn,
                **out.row(
                    status="retrying",
                    provider=err.provider,
                    error_code=err.code,
                    last_error=f"{err.code}: {err.reason}"[:500],
                ),
            )
            await schedule_retry(conn, d, exchange=self.settings.events_exchange, attempt=out.attempt, delay=delay)
            log.warning(
                "sms attempt failed; retry scheduled",
                challenge_id=str(out.sms.challenge_id),
                provider=err.provider,
                error_code=err.code,
                attempt=out.attempt,
                delay_s=delay,
            )
        await store.insert_attempt(
            conn, out.sms.challenge_id, out.attempt, err.provider, outcome, err.code, err.reason[:500]
        )

    async def fail(self, conn: asyncpg.Connection, out: Outgoing, err: ProviderError) -> None:
        await store.save_sms(
            conn,
            **out.row(
                status="failed",
                provider=err.provider,
                error_code=err.code,
                last_error=f"{err.code}: {err.reason}"[:500],
                final_at=datetime.now(timezone.utc),
            ),
        )
        await add_sms_failed(conn, out.sms, err.provider, err.code, err.reason)
        SMS_FINAL.labels(err.provider, "failed").inc()
        log.warning(
            "sms failed",
            challenge_id=str(out.sms.challenge_id),
            provider=err.provider,
            error_code=err.code,
            attempt=out.attempt,
        )

    async def record_accepted(
        self, conn: asyncpg.Connection, out: Outgoing, accepted: Accepted, *, requested_at: datetime
    ) -> None:
        now = datetime.now(timezone.utc)
        SMS_ATTEMPTS.labels(accepted.provider, "accepted").inc()
        on_commit(lambda: CODE_HANDOFF.observe(max(0.0, (now - requested_at).total_seconds())))
        if not await store.code_sent_before(conn, out.sms.convocation_id):
            reached("code-sent")
        await store.save_sms(
            conn,
            **out.row(
                status=rules.accepted_status(accepted.provider, accepted.status),
                provider=accepted.provider,
                provider_message_id=accepted.provider_message_id,
                sent_at=now,
            ),
        )
        await store.insert_attempt(conn, out.sms.challenge_id, out.attempt, accepted.provider, "accepted")
        await add_sms_sent(conn, out.sms, accepted.provider, accepted.provider_message_id, now)
        await apply_early_reports(conn, accepted.provider, accepted.provider_message_id)
        log.info(
            "sms accepted by the provider",
            challenge_id=str(out.sms.challenge_id),
            provider=accepted.provider,
            attempt=out.attempt,
        )
