"""Search, view and act on convocations for one identity, the department figures and the staff audit,
with the department scope and the staff audit applied the same way for the pages and the API."""

from __future__ import annotations

import csv
import io
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

from secretariat import domain, store
from secretariat.auth import Identity
from secretariat.metrics import STAFF_ACTIONS, STAFF_REFUSALS
from secretariat.patients import Patient, Patients
from secretariat.settings import SecretariatSettings
from shared import crypto
from shared.contracts import PatientErasureRequestedV1, StaffActionRequestedV1, envelope
from shared.logs import get_logger
from shared.outbox import add_event

PRODUCER = "secretariat"
AUDIT_COLUMNS = (
    "id",
    "at",
    "subject",
    "name",
    "via",
    "action",
    "convocation_id",
    "department",
    "reason",
    "outcome",
    "detail",
)
PAPER_REASONS = ("preference", "no-email", "email-failed", "not-downloaded", "secretariat", "patient-request")
RESEAL_BATCH = 500
log = get_logger(__name__)


def _sealed_for(consumer: str, action_id: uuid.UUID, keys, field: str, value: str | None) -> str | None:
    """``value`` sealed for the one service that uses it, bound to the action (None stays None)."""
    if value is None:
        return None
    return crypto.seal_field(
        keys, {field: value}, context=crypto.field_context(StaffActionRequestedV1.EVENT_TYPE, action_id, consumer)
    )


@dataclass(frozen=True)
class Outcome:
    ok: bool
    code: str  # "requested" or a refusal key
    action_id: uuid.UUID | None = None


@dataclass(frozen=True)
class Found:
    """A convocation as one identity may see it."""

    row: Any  # the convocation's row (asyncpg.Record)
    patient: Patient | None  # only for the staff of the letter's department


@dataclass(frozen=True)
class View:
    row: Any
    patient: Patient | None
    timeline: list
    actions: list
    bound: bool | None  # whether the patient has a verified number (None: nothing reported yet)
    available: list[str]  # the actions that fit now, for this identity
    unanswered: Any | None  # the oldest request to the hospital system past the wait, if any


@dataclass(frozen=True)
class Figures:
    department: str
    department_name: str | None
    sent: int
    emailed: int
    downloaded_within: int
    paper: int
    paper_by_reason: dict[str, int] = field(default_factory=dict)
    bounced: int = 0
    returned: int = 0
    locked_out: int = 0
    median_seconds: float | None = None


@dataclass(frozen=True)
class AuditFilter:
    person: str | None = None
    action: str | None = None
    convocation_id: uuid.UUID | None = None
    date_from: date | None = None
    date_to: date | None = None

    def bounds(self) -> tuple[datetime | None, datetime | None]:
        return (
            domain.local_day_start(self.date_from) if self.date_from else None,
            domain.local_day_start(self.date_to + timedelta(days=1)) if self.date_to else None,
        )

    def summary(self) -> str:
        return " ".join(
            f"{k}={v}"
            for k, v in (
                ("person", self.person),
                ("action", self.action),
                ("convocation", self.convocation_id),
                ("from", self.date_from),
                ("to", self.date_to),
            )
            if v
        )[:300]


class Console:
    def __init__(self, settings: SecretariatSettings, pool_getter) -> None:
        self.s, self._pool = settings, pool_getter
        self.patients = Patients(settings)
        self.reissue_wait = timedelta(seconds=settings.reissue_wait_seconds)

    @property
    def pool(self):
        return self._pool()

    def patient_refs(self, patient_id: str) -> list[str]:
        # The issuer's keyed hash under each key of its ring: equal ids match, also across a key
        # rotation; the id itself is never stored here.
        return crypto.keyed_hashes(self.s.patient_ref_key, "patient", patient_id)

    async def audit(self, conn, who: Identity, action: str, outcome: str, **kw) -> None:
        await store.audit(conn, session_hash=who.session_hash, via=who.via, action=action, outcome=outcome, **kw)

    async def refused(
        self, via: str, action: str, why: str, detail: str | None = None, who: Identity | None = None
    ) -> None:
        """A refusal (a failed sign-in, a refused token, a form without its CSRF token), counted and audited:
        under the session's person when there is one, else as nobody."""
        STAFF_REFUSALS.labels(why).inc()
        async with self.pool.acquire() as conn:
            await store.audit(
                conn,
                session_hash=who.session_hash if who else None,
                via=via,
                action=action,
                outcome=f"refused:{why}",
                detail=(detail or "")[:300] or None,
            )

    def _found(self, who: Identity, row) -> Found:
        return Found(row, self.patients.reveal(row) if who.knows_patient_of(row["department"]) else None)

    async def search(self, who: Identity, c: domain.Criteria) -> list[Found] | None:
        """The convocations matching ``c`` in the identity's departments; None when it may not search so (by
        who the patient is, without being staff of a department)."""
        if not who.can_read or ((c.name or c.birth_date) and not who.knows_patients):
            async with self.pool.acquire() as conn:
                await self.audit(conn, who, "search", "refused:not-allowed", detail=c.summary())
            return None
        now = datetime.now(timezone.utc)
        start, end = domain.day_bounds(c)
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await store.search(
                conn,
                departments=who.scope(),
                convocation_id=c.convocation_id,
                patient_refs=self.patient_refs(c.patient_id) if c.patient_id else None,
                department=c.department,
                date_from=start,
                date_to=end,
                worklist=c.worklist,
                days=c.days,
                now=now,
                day_start=domain.local_day_start(now.astimezone(domain.ZURICH).date()),
                name_words=self.patients.name_hashes(c.name) if c.name else None,
                birth_hashes=self.patients.birth_hashes(c.birth_date) if c.birth_date else None,
                reissue_wait_seconds=self.s.reissue_wait_seconds,
            )
            await self.audit(conn, who, "search", "ok", detail=f"{c.summary()} results={len(rows)}")
        return [self._found(who, r) for r in rows]

    async def _visible(self, conn, who: Identity, convocation_id: uuid.UUID | None, action: str, **kw):
        """The convocation row if it exists within the identity's departments, else None, audited; both look
        the same, so guessing ids tells nothing."""
        row = await store.get_convocation(conn, convocation_id) if convocation_id and who.can_read else None
        if row is None or not who.sees(row["department"]):
            await self.audit(
                conn,
                who,
                action,
                "not-found" if row is None else "refused-department",
                convocation_id=convocation_id,
                **kw,
            )
            if row is not None:
                STAFF_REFUSALS.labels("department").inc()
            return None
        return row

    async def view(self, who: Identity, convocation_id: uuid.UUID | None, *, audited: bool = True) -> View | None:
        """Everything the timeline page shows, or None when unknown or outside the identity's departments.
        ``audited``: False for the open page's own refreshes (the view itself was audited)."""
        async with self.pool.acquire() as conn, conn.transaction():
            if audited:
                row = await self._visible(conn, who, convocation_id, "view")
                if row is None:
                    return None
                await self.audit(conn, who, "view", "ok", convocation_id=row["id"], department=row["department"])
            else:
                row = await store.get_convocation(conn, convocation_id) if convocation_id else None
                if row is None or not who.can_read or not who.sees(row["department"]):
                    return None
            timeline, actions = await store.timeline_of(conn, row["id"]), await store.actions_of(conn, row["id"])
            binding = await store.binding_of(conn, row["patient_ref"])
        now = datetime.now(timezone.utc)
        available = [a for a in domain.ACTIONS if who.can_act and self.refusal(a, row, now, actions) is None]
        return View(
            row,
            self._found(who, row).patient,
            timeline,
            actions,
            binding["bound"] if binding else None,
            available,
            domain.reissue_unanswered(actions, now, self.reissue_wait),
        )

    def refusal(self, action: str, row, now: datetime, actions) -> str | None:
        return domain.action_refusal(action, row, now, actions, reissue_wait=self.reissue_wait)

    async def act(
        self,
        who: Identity,
        convocation_id: uuid.UUID | None,
        action: str,
        reason: str,
        mobile: str = "",
        email: str = "",
    ) -> Outcome:
        """Record the action and publish it for the service that owns the data (one transaction)."""
        now = datetime.now(timezone.utc)
        reason = (reason or "").strip()
        async with self.pool.acquire() as conn, conn.transaction():
            kw = dict(reason=reason or None, detail=action[:40])
            row = await self._visible(conn, who, convocation_id, "action", **kw)
            if row is None:
                return Outcome(False, "not-found")
            kw["department"] = row["department"]
            refusal = (
                "not-allowed"
                if not who.can_act
                else domain.reason_problem(reason)
                or self.refusal(action, row, now, await store.actions_of(conn, row["id"]))
            )
            e164 = address = None
            if refusal is None and action == "correct-mobile":
                e164, refusal = domain.parse_mobile(mobile, self.s.allowed_countries)
            if refusal is None and action == "correct-email":
                address = domain.parse_email(email)
                refusal = None if address else "email-invalid"
            if refusal:
                await self.audit(conn, who, "action", f"refused:{refusal}", convocation_id=row["id"], **kw)
                return Outcome(False, refusal)
            action_id = uuid.uuid4()
            await store.insert_action(
                conn,
                action_id=action_id,
                convocation_id=row["id"],
                message_id=row["message_id"],
                department=row["department"],
                kind=action,
                staff_subject=who.subject,
            )
            # A new number or address travels only sealed for the one service that uses it; it is not kept here.
            for_portal = _sealed_for("portal", action_id, self.s.staff_field_key, "mobile", e164)
            for_issuer = _sealed_for("issuer", action_id, self.s.issuer_field_key, "email", address)
            await add_event(
                conn,
                envelope(
                    StaffActionRequestedV1(
                        action_id=action_id,
                        convocation_id=row["id"],
                        message_id=row["message_id"],
                        action=action,
                        department=row["department"],
                        requested_by=who.subject,
                        for_portal=for_portal,
                        for_issuer=for_issuer,
                    ),
                    producer=PRODUCER,
                    correlation_id=row["id"],
                ),
            )
            await self.audit(
                conn, who, "action", "requested", convocation_id=row["id"], **{**kw, "detail": f"{action} {action_id}"}
            )
        STAFF_ACTIONS.labels(action, who.via).inc()
        return Outcome(True, "requested", action_id)

    # --- erasure on request --------------------------------------------------------------------------

    async def erase(
        self, who: Identity, convocation_id: uuid.UUID | None, reason: str, patient_id: str = ""
    ) -> Outcome:
        """The patient of this convocation asked for their data to be erased: everything about them, every letter
        in every service (patient.erasure.requested, carried out by the issuer, then every service). Audited with
        the reason under the erasure's id, never the convocation's: once done, nothing here names the patient.
        ``patient_id`` (the API): the hospital's id of the same patient, which reaches their letters recorded
        under every key of PATIENT_REF_KEY, not only the one this convocation's ref was made with."""
        reason = (reason or "").strip()
        async with self.pool.acquire() as conn, conn.transaction():
            row = await self._visible(conn, who, convocation_id, "erase", reason=reason or None)
            if row is None:
                return Outcome(False, "not-found")
            refs = [row["patient_ref"]] if row["patient_ref"] else []
            if patient_id.strip():
                refs = self.patient_refs(patient_id.strip())
            refusal = (
                "not-allowed"
                if not who.can_act
                else domain.reason_problem(reason)
                or ("not-sealed" if not row["patient_ref"] else None)
                or ("patient-mismatch" if row["patient_ref"] not in refs else None)
            )
            kw = dict(reason=reason or None, department=row["department"])
            if refusal:
                await self.audit(conn, who, "erase", f"refused:{refusal}", convocation_id=row["id"], **kw)
                return Outcome(False, refusal)
            erasure_id = uuid.uuid4()
            await store.insert_erasure(conn, erasure_id)
            await add_event(
                conn,
                envelope(
                    PatientErasureRequestedV1(
                        erasure_id=erasure_id, patient_refs=refs, requested_at=datetime.now(timezone.utc)
                    ),
                    producer=PRODUCER,
                    correlation_id=erasure_id,
                ),
            )
            await self.audit(conn, who, "erase", "requested", detail=f"erasure {erasure_id}", **kw)
        STAFF_ACTIONS.labels("erase", who.via).inc()
        return Outcome(True, "requested", erasure_id)

    async def erasure(self, who: Identity, erasure_id: uuid.UUID | None):
        """When an erasure was asked and which services confirmed it, for staff who may act; None if unknown."""
        if erasure_id is None or not who.can_act:
            return None
        async with self.pool.acquire() as conn:
            row, confirmations = await store.get_erasure(conn, erasure_id)
        return None if row is None else (row, confirmations)

    # --- the department figures ---------------------------------------------------------------------

    async def figures(self, who: Identity, period: domain.Period) -> list[Figures] | None:
        """Per department the identity may count, the figures of the letters first sealed in the period."""
        if not who.can_count:
            return None
        start, end = period.bounds
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await store.figures(conn, departments=who.scope(), start=start, end=end, days=period.days)
            reasons = await store.paper_reasons(conn, departments=who.scope(), start=start, end=end)
            await self.audit(
                conn, who, "figures", "ok", detail=f"from={period.start} to={period.end} days={period.days}"
            )
        by_reason: dict[str, dict[str, int]] = {}
        for r in reasons:
            by_reason.setdefault(r["department"], {})[r["reason"] or "unknown"] = r["n"]
        return [
            Figures(
                r["department"],
                r["department_name"],
                r["sent"],
                r["emailed"],
                r["downloaded_within"],
                r["paper"],
                by_reason.get(r["department"], {}),
                r["bounced"],
                r["returned"],
                r["locked_out"],
                r["median_seconds"],
            )
            for r in rows
        ]

    @staticmethod
    def figures_csv(figures: list[Figures], period: domain.Period) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(
            [
                "department",
                "department_name",
                "from",
                "to",
                "sent",
                "emailed",
                f"downloaded_within_{period.days}_days",
                "paper",
                *(f"paper_{r}" for r in PAPER_REASONS),
                "bounced",
                "returned",
                "locked_out",
                "median_hours_to_download",
            ]
        )
        for f in figures:
            writer.writerow(
                [
                    _csv_safe(v)
                    for v in (
                        f.department,
                        f.department_name,
                        period.start,
                        period.end,
                        f.sent,
                        f.emailed,
                        f.downloaded_within,
                        f.paper,
                        *(f.paper_by_reason.get(r, 0) for r in PAPER_REASONS),
                        f.bounced,
                        f.returned,
                        f.locked_out,
                        None if f.median_seconds is None else round(f.median_seconds / 3600, 2),
                    )
                ]
            )
        return out.getvalue()

    async def department_names(self) -> dict[str, str]:
        async with self.pool.acquire() as conn:
            return await store.department_names(conn)

    # --- the staff audit ----------------------------------------------------------------------------

    async def audit_page(self, who: Identity, f: AuditFilter, before_id: int | None, size: int = 100):
        """One page of the audit rows matching the filters, newest first, and whether older ones remain."""
        if not who.can_audit:
            return None
        since, until = f.bounds()
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await store.search_audit(
                conn,
                since=since,
                until=until,
                person=f.person,
                action=f.action,
                convocation_id=f.convocation_id,
                before_id=before_id,
                latest=size + 1,
            )
            await self.audit(conn, who, "audit-view", "ok", detail=f.summary() or None)
        return rows[:size], len(rows) > size

    async def audit_csv(self, who: Identity, f: AuditFilter | None = None) -> str | None:
        """Every row matching the filters (all of them without), oldest first."""
        if not who.can_audit:
            return None
        f = f or AuditFilter()
        since, until = f.bounds()
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await store.search_audit(
                conn, since=since, until=until, person=f.person, action=f.action, convocation_id=f.convocation_id
            )
            await self.audit(conn, who, "audit-export", "ok", detail=f"{f.summary()} rows={len(rows)}".strip())
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(AUDIT_COLUMNS)
        for r in reversed(rows):
            writer.writerow([_csv_safe(r[c]) for c in AUDIT_COLUMNS])
        return out.getvalue()

    async def reseal_patients(self) -> int:
        """Patient details sealed or indexed under older keys, redone under the current ones, in batches."""
        done = 0
        while True:
            batch = 0
            async with self.pool.acquire() as conn, conn.transaction():
                rows = await store.stale_patients(conn, *self.patients.current_key_ids, RESEAL_BATCH)
                for row in rows:
                    again = self.patients.resealed(row)
                    if again is not None:
                        await store.set_patient(conn, row["id"], **again, department_name=None, phone_hint=None)
                        batch += 1
            done += batch
            if len(rows) < RESEAL_BATCH or not batch:  # the rest do not open: said in the log, left as they are
                if done:
                    log.info("patient details sealed again under the current keys", rows=done)
                return done


def _csv_safe(value) -> str:
    """Text a spreadsheet will not run as a formula (OWASP CSV injection)."""
    text = "" if value is None else value.isoformat() if isinstance(value, (datetime, date)) else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
