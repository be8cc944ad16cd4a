"""SMS gateway handler: otp.requested -> one SMS through the provider -> sms.sent or sms.failed."""

from __future__ import annotations

from datetime import datetime, timezone

import asyncpg
import phonenumbers

from shared import crypto
from shared.consumer import Delivery
from shared.contracts import OtpRequestedV1, SmsFailedV1, SmsSentV1, envelope
from shared.logs import get_logger
from shared.outbox import add_event
from shared.retry import RetryPolicy, schedule_retry
from sms_gateway import store
from sms_gateway.metrics import SMS_ATTEMPTS
from sms_gateway.providers import ProviderError, TwilioProvider
from sms_gateway.settings import SmsSettings
from sms_gateway.text import otp_text

PRODUCER = "sms-gateway"
log = get_logger(__name__)


class SmsHandlers:
    def __init__(self, settings: SmsSettings, provider: TwilioProvider) -> None:
        self.settings, self.provider = settings, provider
        self.retry = RetryPolicy.parse(settings.sms_retry_delays)

    async def on_otp_requested(self, conn: asyncpg.Connection, d: Delivery[OtpRequestedV1]) -> None:
        o, now = d.data, datetime.now(timezone.utc)
        row = await store.get_sms(conn, o.challenge_id)
        if row is not None and row["status"] != "retrying":
            log.info("code already handled; not texting again", status=row["status"])
            return
        secret = crypto.open_field(self.settings.sms_field_key, o.for_sms,
                                   context=crypto.field_context("otp.requested", o.challenge_id, "sms"))
        phone, code = secret["phone"], secret["code"]
        phone_hash = crypto.keyed_hash(self.settings.sms_field_key, "phone", phone)
        country = phonenumbers.region_code_for_number(phonenumbers.parse(phone))
        attempts = (row["attempts"] if row else 0) + 1
        base = dict(challenge_id=o.challenge_id, message_id=o.message_id, convocation_id=o.convocation_id,
                    phone_hash=phone_hash, country=country, attempts=attempts)
        if o.expires_at <= now:
            await self._fail(conn, d, base, ProviderError("none", True, "expired", "the code expired before sending"))
            return
        if country not in self.settings.allowed_countries:
            SMS_ATTEMPTS.labels("none", "blocked").inc()
            await self._fail(conn, d, base, ProviderError("none", True, "country-not-allowed",
                                                          f"destination country {country} is not allowed"))
            return
        try:
            accepted = await self.provider.send(phone, otp_text(o.language, code, o.portal_host))
        except ProviderError as err:
            delay = None if err.permanent else self.retry.delay_for(attempts)
            if delay is None:
                SMS_ATTEMPTS.labels(err.provider, "permanent" if err.permanent else "exhausted").inc()
                await self._fail(conn, d, base, err)
            else:
                SMS_ATTEMPTS.labels(err.provider, "transient").inc()
                await store.upsert_sms(conn, **base, provider=err.provider, provider_message_id=None,
                                       status="retrying", last_error=f"{err.code}: {err.reason}"[:500])
                await schedule_retry(conn, d, exchange=self.settings.events_exchange, attempt=attempts, delay=delay)
                log.warning("sms transient failure; retry scheduled", code=err.code, attempt=attempts, delay_s=delay)
            return
        SMS_ATTEMPTS.labels(accepted.provider, "accepted").inc()
        await store.upsert_sms(conn, **base, provider=accepted.provider,
                               provider_message_id=accepted.provider_message_id, status="sent", sent_at=now)
        await add_event(conn, envelope(
            SmsSentV1(challenge_id=o.challenge_id, message_id=o.message_id, convocation_id=o.convocation_id,
                      provider=accepted.provider, provider_message_id=accepted.provider_message_id, sent_at=now),
            producer=PRODUCER, correlation_id=d.envelope.correlation_id, causation_id=d.envelope.event_id))
        log.info("sms accepted by the provider", provider=accepted.provider, attempt=attempts)

    async def _fail(self, conn: asyncpg.Connection, d: Delivery[OtpRequestedV1], base: dict, err: ProviderError) -> None:
        o, now = d.data, datetime.now(timezone.utc)
        await store.upsert_sms(conn, **base, provider=err.provider, provider_message_id=None, status="failed",
                               last_error=f"{err.code}: {err.reason}"[:500], final_at=now)
        await add_event(conn, envelope(
            SmsFailedV1(challenge_id=o.challenge_id, message_id=o.message_id, convocation_id=o.convocation_id,
                        provider=err.provider, provider_code=err.code, reason=err.reason[:500], failed_at=now),
            producer=PRODUCER, correlation_id=d.envelope.correlation_id, causation_id=d.envelope.event_id))
        log.warning("sms failed", provider=err.provider, code=err.code)
