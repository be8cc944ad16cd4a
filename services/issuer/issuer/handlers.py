"""Issuer event handlers: decode the typed event, one transaction, outbox events; nothing else.

Each round trip to the database is most of a handler's cost: the steps (``_progress``, ``_post``,
``_revoke``) change the row in one statement each and return the events to publish, and the handler
writes all of its events in one statement at the end (``_emit``)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import NamedTuple

import asyncpg

from issuer import domain, store
from issuer.metrics import PERIOD_KEY_FAILURES, POSTAL_REQUESTS, REISSUE_REQUESTS
from issuer.pdfcheck import UnreadablePdf, active_content
from issuer.settings import IssuerSettings
from shared import crypto, erasure, rejections
from shared.consumer import Delivery, Rejected
from shared.contracts import (
    ISSUER_ACTIONS,
    ConvocationCancelledV1,
    ConvocationCreatedV1,
    ConvocationReissueRequestedV1,
    ConvocationStatusV1,
    DocumentReleasedV1,
    EmailFailedV1,
    EmailSentV1,
    EventPayload,
    MessageRevokedV1,
    PatientErasedV1,
    PatientErasureRequestedV1,
    PostalCancelledV1,
    PostalChosenV1,
    PostalPostedV1,
    PostalPrintedV1,
    PostalProgressV1,
    PostalRequestedV1,
    PostalReturnedV1,
    PublicContact,
    ReminderRequestedV1,
    StaffActionRequestedV1,
    envelope,
)
from shared.keystore import KeyStore, PeriodKey, PeriodKeyUnavailable
from shared.logs import get_logger
from shared.metrics import PAPER_REQUESTS, on_commit, reached
from shared.outbox import add_events

PRODUCER = "issuer"
log = get_logger(__name__)
# The statuses that put a convocation in each funnel stage the issuer owns.
FUNNEL_STATUSES = {
    "e-mailed": ("e-mailed",),
    "bounced": ("bounced",),
    "downloaded": ("downloaded",),
    "paper": ("postal", "postal-fallback"),
}
PAPER_GRACE_SECONDS = 900  # a sweep or two after the deadline is still on time
# The statuses of a letter sent again that complete the secretariat's resend or e-mail correction.
REISSUE_DONE = frozenset({"e-mailed", "postal", "postal-fallback"})


class _Letter(NamedTuple):
    """A convocation sealed, before it is stored: the message.sealed and email.requested payloads, the print
    room's copy, and what the secretariat's staff see of the patient."""

    sealed: domain.Sealed
    copy: str
    expires_at: datetime
    postal: str | None  # why it goes by post at once, if it does
    for_secretariat: str


class IssuerHandlers:
    def __init__(self, settings: IssuerSettings) -> None:
        self.settings = settings
        self.keys = domain.SealingKeys(
            seal_keys=settings.seal_keys,
            patient_ref_key=settings.patient_ref_key,
            mailer_field_key=settings.mailer_field_key,
            portal_field_key=settings.portal_field_key,
        )
        self.public_contact = PublicContact(phone=settings.public_contact_phone, email=settings.public_contact_email)
        self.key_store = KeyStore(settings.key_store_url, settings.key_store_token.get_secret_value())

    # --- upstream -----------------------------------------------------------------------------

    async def on_convocation_created(self, conn: asyncpg.Connection, d: Delivery[ConvocationCreatedV1]) -> None:
        c, now = d.data, datetime.now(timezone.utc)
        problem = domain.appointment_problem(c, now)
        if problem:
            raise Rejected(rejections.APPOINTMENT_IN_PAST, problem)
        # Sealed before looking: a new convocation (nearly all of them) then takes one statement to store,
        # and a known one is superseded by this same letter unless the secretariat corrected its address.
        letter = await self._seal(c, now)
        row = await store.insert_convocation(
            conn,
            convocation_id=c.convocation_id,
            message_id=letter.sealed.message.message_id,
            patient_ref=letter.sealed.message.patient_ref,
            delivery=c.delivery,
            language=c.patient.language,
            appointment_at=c.appointment.starts_at,
            expires_at=letter.expires_at,
            created_at=d.envelope.occurred_at,
            sealed_at=now,
            print_copy=letter.copy,
            department=c.appointment.department.code,
            sandbox=c.sandbox,
        )
        if row is not None:
            reached("created")
            reached("sealed", after_seconds=(now - d.envelope.occurred_at).total_seconds())
            await self._emit(conn, d, *await self._sealed(conn, row, letter, now), convocation_id=row["id"])
            return
        # Already there, inserted by an earlier event or by another delivery whose insert committed while
        # ours waited for it: ours comes after it, so it supersedes it.
        existing = await store.get_convocation(conn, c.convocation_id)
        await self._supersede(conn, d, existing, now, letter)

    async def _supersede(
        self, conn, d: Delivery[ConvocationCreatedV1], existing, now: datetime, letter: _Letter
    ) -> None:
        """A new convocation for the same appointment replaces the old message, which is revoked; the funnel
        counts the convocation once (it was counted when first created). A letter the secretariat asked to
        send again is this one: its corrected address wins over the event's. ``letter``: sealed from the
        event as it came, sealed again only if an address correction changes it."""
        c = d.data
        reissues = await store.pending_reissues(conn, c.convocation_id)
        corrected = self._corrected_email(reissues)
        if corrected:  # the secretariat's correction wins over the republished address
            c = domain.with_email(c, corrected)
            letter = await self._seal(c, now, address_corrected=True)
        elif reissues:  # sent again as the secretariat asked: the e-mail must not say the letter changed
            letter = await self._seal(c, now, sent_again=True)
        if reissues:
            await store.consume_reissues(conn, c.convocation_id, letter.sealed.message.message_id, now)
            log.info(
                "convocation sent again as the secretariat asked",
                requests=len(reissues),
                email_corrected=corrected is not None,
            )
        events = await self._revoke(conn, existing, "superseded", now)
        row = await store.replace_message(
            conn,
            c.convocation_id,
            message_id=letter.sealed.message.message_id,
            patient_ref=letter.sealed.message.patient_ref,
            delivery=c.delivery,
            language=c.patient.language,
            appointment_at=c.appointment.starts_at,
            expires_at=letter.expires_at,
            sealed_at=now,
            print_copy=letter.copy,
            department=c.appointment.department.code,
            sandbox=c.sandbox,
        )
        events += await self._sealed(conn, row, letter, now)
        await self._emit(conn, d, *events, convocation_id=row["id"])

    async def _period_key(self, expires_at: datetime) -> PeriodKey:
        """The key store's key for the period of this expiry; without one, the letter is dead-lettered."""
        try:
            return await self.key_store.for_expiry(expires_at)
        except PeriodKeyUnavailable as exc:
            PERIOD_KEY_FAILURES.labels(exc.reason).inc()
            raise Rejected(rejections.PERIOD_KEY_UNAVAILABLE, f"{exc.reason}: {exc.detail}") from None

    async def _seal(
        self, c: ConvocationCreatedV1, now: datetime, *, address_corrected: bool = False, sent_again: bool = False
    ) -> _Letter:
        """The letter sealed for the patient's link under its period's key, its print-room copy, and how it
        goes out (CPU only, once the period key is known: the key store is asked once per period)."""
        expires_at = domain.expiry(c.appointment.starts_at, self.settings.message_ttl_days)
        period = await self._period_key(expires_at)
        pdf = self._upstream_pdf(c) or self._render(c, now)
        postal = domain.postal_reason_at_creation(c)
        sealed = domain.seal_convocation(
            c,
            pdf,
            self.keys,
            expires_at=expires_at,
            period=period,
            send_email=postal is None,
            public_contact=self.public_contact,
            address_corrected=address_corrected,
            sent_again=sent_again,
        )
        return _Letter(
            sealed,
            domain.print_copy(c, pdf, self.settings.print_room_public_key),
            expires_at,
            postal,
            domain.for_secretariat(c, sealed.message.message_id, self.settings.secretariat_field_key),
        )

    async def _sealed(self, conn, row, letter: _Letter, now: datetime) -> list:
        """The sealed message's events, and the print room's when it goes by post at once."""
        # The letter first, then its link: the portal has the message by the time the e-mail is out.
        events: list = [letter.sealed.message]
        if letter.sealed.email is not None:
            events.append(letter.sealed.email)
        events.append(await self._status(conn, row, "sealed", now, for_secretariat=letter.for_secretariat))
        log.info(
            "convocation sealed", message_id=str(letter.sealed.message.message_id), key_id=letter.sealed.message.key_id
        )
        if letter.postal:
            events += await self._post(conn, row, letter.postal, now)
        return events

    async def on_convocation_cancelled(self, conn: asyncpg.Connection, d: Delivery[ConvocationCancelledV1]) -> None:
        row = await store.get_convocation(conn, d.data.convocation_id)
        if row is None:
            raise Rejected(rejections.UNKNOWN_CONVOCATION, f"no convocation {d.data.convocation_id} to cancel")
        if row["status"] in ("cancelled", "expired", "withdrawn"):
            return
        await self._emit(
            conn,
            d,
            *await self._revoke(conn, row, "cancelled", datetime.now(timezone.utc), detail=d.data.reason),
            convocation_id=row["id"],
        )

    # --- downstream ---------------------------------------------------------------------------

    async def on_email_sent(self, conn: asyncpg.Connection, d: Delivery[EmailSentV1]) -> None:
        row = await self._current(conn, d)
        if row is not None:
            await self._emit(
                conn, d, *await self._progress(conn, row, "e-mailed", d.data.accepted_at), convocation_id=row["id"]
            )

    async def on_email_failed(self, conn: asyncpg.Connection, d: Delivery[EmailFailedV1]) -> None:
        row = await self._current(conn, d)
        if row is None:
            return
        detail = f"{d.data.smtp_code or ''} {d.data.reason}".strip()[:300]
        events = await self._progress(conn, row, "bounced", d.data.failed_at, detail=detail)
        if row["postal_at"] is None and row["downloaded_at"] is None and row["status"] not in domain.CLOSED:
            # The row as read: _post reads nothing _progress changed (the status, email_failed_at).
            events += await self._post(conn, row, "email-failed", datetime.now(timezone.utc))
        await self._emit(conn, d, *events, convocation_id=row["id"])

    async def on_document_released(self, conn: asyncpg.Connection, d: Delivery[DocumentReleasedV1]) -> None:
        row = await self._current(conn, d)
        if row is not None:  # delivered: no paper copy is needed any more
            await self._emit(
                conn,
                d,
                *await self._progress(conn, row, "downloaded", d.data.released_at, drop_print_copy=True),
                convocation_id=row["id"],
            )

    async def on_staff_action(self, conn: asyncpg.Connection, d: Delivery[StaffActionRequestedV1]) -> None:
        """Paper now, withdrawal, or the letter sent again (resend, corrected e-mail address), asked by the
        department's secretariat (the portal does the others). Done once: a letter already posted or closed
        is left as it is."""
        a = d.data
        if a.action not in ISSUER_ACTIONS:
            return
        row = await store.get_convocation(conn, a.convocation_id)
        if row is None:
            raise Rejected(rejections.UNKNOWN_CONVOCATION, f"no convocation {a.convocation_id}")
        if row["message_id"] != a.message_id or row["status"] in domain.CLOSED:
            log.info("staff action on a closed or replaced message ignored", action=a.action)
            return
        now = datetime.now(timezone.utc)
        if a.action == "post":
            await self._emit(
                conn,
                d,
                *await self._post(conn, row, "secretariat", now, action_id=a.action_id),
                convocation_id=row["id"],
            )
        elif a.action == "withdraw":
            await self._emit(
                conn,
                d,
                *await self._revoke(conn, row, "withdrawn", now, action_id=a.action_id),
                convocation_id=row["id"],
            )
        elif a.action == "email-instead" and not (self._paper_pending(row) and row["delivery"] == "email"):
            log.info("switch back to e-mail ignored: the letter is not on paper, is printed, or has no e-mail channel")
        else:
            await self._ask_reissue(conn, d, a, row, now)

    async def _ask_reissue(
        self, conn, d: Delivery[StaffActionRequestedV1], a: StaffActionRequestedV1, row, now: datetime
    ) -> None:
        """Only the hospital system holds the letter: ask it to publish the convocation again. A corrected
        address is checked, then kept only as the secretariat sealed it, until the new message uses it."""
        if now >= row["appointment_at"]:
            log.info("reissue asked after the appointment ignored")
            return
        email_sealed = None
        if a.action == "correct-email":
            if a.for_issuer is None:
                raise Rejected(rejections.EMAIL_INVALID, "correct-email carries no address")
            if domain.valid_email(self._open_email(a.for_issuer, a.action_id)) is None:
                raise Rejected(rejections.EMAIL_INVALID, "the corrected address is not one valid e-mail address")
            email_sealed = a.for_issuer
        reason = {"correct-email": "email-corrected", "email-instead": "email-instead"}.get(a.action, "resend")
        if not await store.add_reissue_request(
            conn,
            action_id=a.action_id,
            convocation_id=a.convocation_id,
            reason=reason,
            email_sealed=email_sealed,
            requested_at=now,
        ):
            return
        events: list = []
        if self._paper_pending(row):  # the new letter goes by e-mail: the print room drops this one
            events += await self._stop_paper(conn, row, "email-instead", now)
        await self._emit(
            conn,
            d,
            *events,
            ConvocationReissueRequestedV1(
                convocation_id=a.convocation_id, reason=reason, requested_at=now, action_id=a.action_id
            ),
        )
        on_commit(REISSUE_REQUESTS.labels(reason).inc)
        log.info("reissue requested from the hospital system", reason=reason)

    def _open_email(self, token: str, action_id) -> object:
        return crypto.open_field(
            self.settings.issuer_field_key,
            token,
            context=crypto.field_context(StaffActionRequestedV1.EVENT_TYPE, action_id, "issuer"),
        ).get("email")

    def _corrected_email(self, reissues) -> str | None:
        """The newest address the secretariat corrected among the pending requests, if any."""
        for r in reversed(reissues):
            if r["email_sealed"]:
                return domain.valid_email(self._open_email(r["email_sealed"], r["action_id"]))
        return None

    async def on_postal_chosen(self, conn: asyncpg.Connection, d: Delivery[PostalChosenV1]) -> None:
        """The patient asked for the post on the portal: the print room posts the letter (once)."""
        row = await self._current(conn, d)
        if row is not None and row["status"] not in domain.CLOSED:
            await self._emit(
                conn, d, *await self._post(conn, row, "patient-request", d.data.chosen_at), convocation_id=row["id"]
            )

    # --- the print room -----------------------------------------------------------------------

    async def on_postal_printed(self, conn: asyncpg.Connection, d: Delivery[PostalPrintedV1]) -> None:
        await self._print_report(conn, d, "printed")

    async def on_postal_posted(self, conn: asyncpg.Connection, d: Delivery[PostalPostedV1]) -> None:
        await self._print_report(conn, d, "posted")

    async def on_postal_returned(self, conn: asyncpg.Connection, d: Delivery[PostalReturnedV1]) -> None:
        await self._print_report(conn, d, "returned", detail=d.data.reason)

    async def _print_report(self, conn, d: Delivery, step: str, detail: str | None = None) -> None:
        """What the print room did with a paper letter: the hospital's status (even when a download came
        first: the paper went out all the same), the secretariat's timeline and the portal's page. Once
        printed, the print room's copy is not needed here any more."""
        report = d.data
        row = await store.get_convocation(conn, report.convocation_id)
        if row is None:
            raise Rejected(rejections.UNKNOWN_CONVOCATION, f"no convocation {report.convocation_id}")
        if report.message_id is not None and report.message_id != row["message_id"]:
            log.info("print room report about a replaced letter ignored", step=step)
            return
        if row[store.stamp_column(step)] is not None:
            return  # reported before
        if domain.advances(row["status"], step) and row["status"] not in domain.CLOSED:
            await store.set_status(conn, row["id"], step, report.at, detail, drop_print_copy=True)
        else:
            await store.stamp(conn, row["id"], step, report.at, drop_print_copy=True)
        log.info("print room report", step=step)
        await self._emit(
            conn,
            d,
            await self._status(conn, row, step, report.at, detail),
            PostalProgressV1(message_id=row["message_id"], convocation_id=row["id"], step=step, at=report.at),
            convocation_id=row["id"],
        )

    # --- erasure on request --------------------------------------------------------------------

    async def on_patient_erasure_requested(
        self, conn: asyncpg.Connection, d: Delivery[PatientErasureRequestedV1]
    ) -> None:
        """A patient asked for their data to be erased: their convocations go here, the print room drops a paper
        letter not printed yet, the hospital gets the status 'erased' of each, and every other service is told
        (patient.erased) to erase what it holds. Its outbox rows about them go first, so only these leave."""
        e, now = d.data, datetime.now(timezone.utc)
        rows = await store.convocations_of(conn, e.patient_refs)
        ids = [row["id"] for row in rows]
        erased = await store.erase(conn, ids, e.patient_refs)
        events = []
        for row in rows:
            about: list[EventPayload] = []
            if self._paper_pending(row):
                about.append(PostalCancelledV1(convocation_id=row["id"], message_id=row["message_id"], reason="erased"))
            # The last status: nothing about the patient (no ref, department or appointment), the erasure's id.
            about.append(
                ConvocationStatusV1(
                    convocation_id=row["id"], status="erased", at=now, action_id=e.erasure_id, sandbox=row["sandbox"]
                )
            )
            events += [
                envelope(p, producer=PRODUCER, correlation_id=row["id"], causation_id=d.envelope.event_id)
                for p in about
            ]
        events.append(
            envelope(
                PatientErasedV1(erasure_id=e.erasure_id, patient_refs=e.patient_refs, convocation_ids=ids, at=now),
                producer=PRODUCER,
                correlation_id=e.erasure_id,
                causation_id=d.envelope.event_id,
            )
        )
        events.append(
            erasure.confirmation(
                PRODUCER, e.erasure_id, convocations=len(ids), rows=erased, causation_id=d.envelope.event_id
            )
        )
        await add_events(conn, events)

    # --- scheduled (see sweeper.py) -----------------------------------------------------------

    async def post_fallback(self, conn: asyncpg.Connection, row: asyncpg.Record, now: datetime) -> None:
        await self._emit(conn, None, *await self._post(conn, row, "not-downloaded", now), convocation_id=row["id"])

    async def remind(self, conn: asyncpg.Connection, row: asyncpg.Record, now: datetime) -> None:
        """The mailer reminds the patient, once; the paper deadline stays as it was."""
        deadline = domain.fallback_deadline(row["appointment_at"], self.settings.postal_fallback_hours)
        await self._emit(
            conn,
            None,
            ReminderRequestedV1(message_id=row["message_id"], convocation_id=row["id"], paper_deadline=deadline),
            convocation_id=row["id"],
        )
        await store.mark_reminded(conn, row["id"], now)
        log.info("reminder requested")

    async def expire(self, conn: asyncpg.Connection, row: asyncpg.Record, now: datetime) -> None:
        await self._emit(conn, None, *await self._revoke(conn, row, "expired", now), convocation_id=row["id"])

    # --- steps --------------------------------------------------------------------------------

    async def _current(self, conn: asyncpg.Connection, d: Delivery):
        """The convocation, if the event is about its current message (not a superseded one)."""
        row = await store.get_convocation(conn, d.data.convocation_id)
        if row is None:
            raise Rejected(rejections.UNKNOWN_CONVOCATION, f"no convocation {d.data.convocation_id}")
        if row["message_id"] != d.data.message_id:
            log.info("event about a superseded message ignored", message_id=str(d.data.message_id))
            return None
        return row

    async def _progress(
        self, conn, row, status: str, at: datetime, detail: str | None = None, *, drop_print_copy: bool = False
    ) -> list:
        """A step reported downstream: the status if it advances, else only the step's time; returns the
        status event to publish (none for a step only stamped)."""
        await self._count_stage(conn, row, status, after_seconds=(at - row["created_at"]).total_seconds())
        if not domain.advances(row["status"], status):
            await store.stamp(conn, row["id"], status, at, drop_print_copy=drop_print_copy)
            return []
        await store.set_status(conn, row["id"], status, at, detail, drop_print_copy=drop_print_copy)
        log.info("status changed", status=status)
        return [await self._status(conn, row, status, at, detail)]

    @staticmethod
    async def _count_stage(conn, row, stage: str, *, after_seconds: float | None = None) -> None:
        """Count the funnel stage if this convocation never reached it before (called before the
        status is recorded; a step only stamped, e.g. e-mailed after downloaded, leaves its column set).
        Only a superseding message clears the stamps (``replace_message``): a convocation never
        superseded whose stamp is empty has no such step in its history, so only then is it read."""
        column = store.stamp_column(FUNNEL_STATUSES[stage][0])
        if row[column] is None and (
            not row["superseded_count"] or not await store.reached_before(conn, row["id"], FUNNEL_STATUSES[stage])
        ):
            reached(stage, after_seconds=after_seconds)

    async def _post(self, conn, row, reason: str, now: datetime, action_id=None) -> list:
        """Ask the print room to post the letter, once (again after a switch back to e-mail); returns the
        events to publish."""
        if (row["postal_at"] is not None and row["postal_cancelled_at"] is None) or not row["has_print_copy"]:
            return []
        status = "postal" if reason in ("preference", "secretariat", "patient-request") else "postal-fallback"
        await self._count_stage(conn, row, "paper")
        deadline = max(
            domain.fallback_deadline(row["appointment_at"], self.settings.postal_fallback_hours), row["sealed_at"]
        )
        late = (now - deadline).total_seconds() > PAPER_GRACE_SECONDS
        on_commit(PAPER_REQUESTS.labels("late" if late else "on-time").inc)
        copy = await store.mark_posted(conn, row["id"], status, reason, now)
        if row["sandbox"]:  # a sandbox test is never printed: its statuses say what would have happened
            log.info("sandbox test: not handed to the print room", reason=reason)
            return [
                await self._status(conn, row, status, now, f"{reason} (sandbox test: not posted)", action_id=action_id)
            ]
        events = [
            PostalRequestedV1(
                convocation_id=row["id"],
                message_id=row["message_id"],
                reason=reason,
                language=row["language"],
                for_print_room=copy,
            ),
            await self._status(conn, row, status, now, reason, action_id=action_id),
            PostalProgressV1(
                message_id=row["message_id"], convocation_id=row["id"], step="requested", reason=reason, at=now
            ),
        ]
        on_commit(POSTAL_REQUESTS.labels(reason).inc)
        log.info("postal delivery requested", reason=reason)
        return events

    async def _revoke(self, conn, row, reason: str, now: datetime, detail: str | None = None, action_id=None) -> list:
        """Revoke the message (the portal destroys it), drop the print copy, and tell the print room not to post
        a letter it has not printed yet; returns the events to publish."""
        events = await self._stop_paper(conn, row, reason, now) if self._paper_pending(row) else []
        await store.set_status(conn, row["id"], reason, now, detail, drop_print_copy=True)
        log.info("message revoked", reason=reason, message_id=str(row["message_id"]))
        return [
            *events,
            MessageRevokedV1(message_id=row["message_id"], convocation_id=row["id"], reason=reason),
            await self._status(conn, row, reason, now, detail, action_id=action_id),
        ]

    @staticmethod
    def _paper_pending(row) -> bool:
        """Asked of the print room, and neither printed nor dropped."""
        return row["postal_at"] is not None and row["postal_cancelled_at"] is None and row["printed_at"] is None

    async def _stop_paper(self, conn, row, reason: str, now: datetime) -> list:
        """The print room must drop the letter; the portal offers paper again until the new letter comes."""
        await store.cancel_postal(conn, row["id"], now, reason)
        log.info("print room told not to post the letter", reason=reason)
        return [
            PostalCancelledV1(convocation_id=row["id"], message_id=row["message_id"], reason=reason),
            await self._status(conn, row, "postal-cancelled", now, reason),
            PostalProgressV1(message_id=row["message_id"], convocation_id=row["id"], step="cancelled", at=now),
        ]

    async def _emit(self, conn, d: Delivery | None, *payloads, convocation_id=None) -> None:
        """The handler's events, in their order, in one statement (none: no statement)."""
        correlation = d.envelope.correlation_id if d else convocation_id
        causation = d.envelope.event_id if d else None
        await add_events(
            conn, [envelope(p, producer=PRODUCER, correlation_id=correlation, causation_id=causation) for p in payloads]
        )

    async def _status(
        self,
        conn,
        row,
        status: str,
        at: datetime,
        detail: str | None = None,
        *,
        action_id=None,
        for_secretariat: str | None = None,
    ) -> ConvocationStatusV1:
        """The status report, with what the secretariat's read model needs to place it. A letter sent again
        for the secretariat reports its first e-mail (or paper) with the action it carries out."""
        if action_id is None and row["superseded_count"] and status in REISSUE_DONE:
            action_id = await store.reissue_action(conn, row["message_id"])
        return ConvocationStatusV1(
            convocation_id=row["id"],
            status=status,
            at=at,
            detail=detail,
            message_id=row["message_id"],
            department=row["department"],
            appointment_at=row["appointment_at"],
            delivery=row["delivery"],
            patient_ref=row["patient_ref"],
            action_id=action_id,
            sandbox=row["sandbox"],
            for_secretariat=for_secretariat,
        )

    @staticmethod
    def _upstream_pdf(c: ConvocationCreatedV1) -> bytes | None:
        """The hospital's own PDF, refused when it carries anything a viewer would run or open."""
        pdf = c.document_bytes()
        if pdf is None:
            return None
        try:
            found = active_content(pdf)
        except UnreadablePdf as exc:
            raise Rejected(rejections.PDF_UNREADABLE, str(exc)) from None
        if found:
            raise Rejected(rejections.PDF_ACTIVE_CONTENT, f"the document carries active content: {found}")
        return pdf

    def _render(self, c: ConvocationCreatedV1, now: datetime) -> bytes:
        from issuer.render import render_convocation_pdf

        return render_convocation_pdf(
            c, hospital_name=self.settings.hospital_name, now=now, logo=self.settings.letter_logo
        )
