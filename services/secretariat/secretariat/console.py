"""Search, view and act on convocations for one identity, with the department scope and the staff audit
applied the same way for the pages and the API."""

from __future__ import annotations

import csv
import io
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from secretariat import domain, store
from secretariat.auth import Identity
from secretariat.metrics import STAFF_ACTIONS, STAFF_REFUSALS
from secretariat.settings import SecretariatSettings
from shared import crypto
from shared.contracts import StaffActionRequestedV1, envelope
from shared.outbox import add_event

PRODUCER = "secretariat"
AUDIT_COLUMNS = ("id", "at", "subject", "name", "via", "action", "convocation_id", "department", "reason",
                 "outcome", "detail")


def _sealed_for(consumer: str, action_id: uuid.UUID, keys, field: str, value: str | None) -> str | None:
    """``value`` sealed for the one service that uses it, bound to the action (None stays None)."""
    if value is None:
        return None
    return crypto.seal_field(keys, {field: value},
                             context=crypto.field_context(StaffActionRequestedV1.EVENT_TYPE, action_id, consumer))


@dataclass(frozen=True)
class Outcome:
    ok: bool
    code: str  # "requested" or a refusal key
    action_id: uuid.UUID | None = None


class Console:
    def __init__(self, settings: SecretariatSettings, pool_getter) -> None:
        self.s, self._pool = settings, pool_getter

    @property
    def pool(self):
        return self._pool()

    def patient_refs(self, patient_id: str) -> list[str]:
        # The issuer's keyed hash under each key of its ring: equal ids match, also across a key
        # rotation; the id itself is never stored here.
        return crypto.keyed_hashes(self.s.patient_ref_key, "patient", patient_id)

    async def audit(self, conn, who: Identity, action: str, outcome: str, **kw) -> None:
        await store.audit(conn, subject=who.subject, name=who.name, via=who.via, action=action, outcome=outcome, **kw)

    async def search(self, who: Identity, c: domain.Criteria) -> list:
        now = datetime.now(timezone.utc)
        start, end = domain.day_bounds(c)
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await store.search(
                conn, departments=who.scope(), convocation_id=c.convocation_id,
                patient_refs=self.patient_refs(c.patient_id) if c.patient_id else None, department=c.department,
                date_from=start, date_to=end, worklist=c.worklist, days=c.days, now=now,
                day_start=domain.local_day_start(now.astimezone(domain.ZURICH).date()))
            await self.audit(conn, who, "search", "ok", detail=f"{c.summary()} results={len(rows)}")
        return rows

    async def view(self, who: Identity, convocation_id: uuid.UUID | None):
        """(convocation, timeline, actions) or None when unknown or outside the identity's departments:
        both look the same, so guessing ids tells nothing."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await store.get_convocation(conn, convocation_id) if convocation_id else None
            if row is None or not who.sees(row["department"]):
                await self.audit(conn, who, "view", "not-found" if row is None else "refused-department",
                                 convocation_id=convocation_id)
                if row is not None:
                    STAFF_REFUSALS.labels("department").inc()
                return None
            await self.audit(conn, who, "view", "ok", convocation_id=row["id"], department=row["department"])
            return row, await store.timeline_of(conn, row["id"]), await store.actions_of(conn, row["id"])

    async def act(self, who: Identity, convocation_id: uuid.UUID | None, action: str, reason: str,
                  mobile: str = "", email: str = "") -> Outcome:
        """Record the action and publish it for the service that owns the data (one transaction)."""
        now = datetime.now(timezone.utc)
        reason = (reason or "").strip()
        async with self.pool.acquire() as conn, conn.transaction():
            row = await store.get_convocation(conn, convocation_id) if convocation_id else None
            kw = dict(convocation_id=convocation_id, reason=reason or None, detail=action[:40])
            if row is None or not who.sees(row["department"]):
                await self.audit(conn, who, "action", "not-found" if row is None else "refused-department", **kw)
                if row is not None:
                    STAFF_REFUSALS.labels("department").inc()
                return Outcome(False, "not-found")
            kw["department"] = row["department"]
            refusal = ("not-allowed" if not who.can_act else domain.reason_problem(reason)
                       or domain.action_refusal(action, row, now, await store.actions_of(conn, row["id"])))
            e164 = address = None
            if refusal is None and action == "correct-mobile":
                e164 = domain.parse_mobile(mobile)
                refusal = None if e164 else "mobile-invalid"
            if refusal is None and action == "correct-email":
                address = domain.parse_email(email)
                refusal = None if address else "email-invalid"
            if refusal:
                await self.audit(conn, who, "action", f"refused:{refusal}", **kw)
                return Outcome(False, refusal)
            action_id = uuid.uuid4()
            await store.insert_action(conn, action_id=action_id, convocation_id=row["id"],
                                      message_id=row["message_id"], department=row["department"], kind=action,
                                      staff_subject=who.subject)
            # A new number or address travels only sealed for the one service that uses it; it is not kept here.
            for_portal = _sealed_for("portal", action_id, self.s.staff_field_key, "mobile", e164)
            for_issuer = _sealed_for("issuer", action_id, self.s.issuer_field_key, "email", address)
            await add_event(conn, envelope(
                StaffActionRequestedV1(action_id=action_id, convocation_id=row["id"], message_id=row["message_id"],
                                       action=action, department=row["department"], requested_by=who.subject,
                                       for_portal=for_portal, for_issuer=for_issuer),
                producer=PRODUCER, correlation_id=row["id"]))
            await self.audit(conn, who, "action", "requested", **{**kw, "detail": f"{action} {action_id}"})
        STAFF_ACTIONS.labels(action, who.via).inc()
        return Outcome(True, "requested", action_id)

    async def audit_csv(self, who: Identity) -> str | None:
        if not who.can_audit:
            return None
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await store.audit_rows(conn)
            await self.audit(conn, who, "audit-export", "ok", detail=f"rows={len(rows)}")
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(AUDIT_COLUMNS)
        for r in rows:
            writer.writerow([_csv_safe(r[c]) for c in AUDIT_COLUMNS])
        return out.getvalue()

    async def prune_audit(self) -> int:
        async with self.pool.acquire() as conn:
            return await store.prune_audit(conn, self.s.audit_retention_days)


def _csv_safe(value) -> str:
    """Text a spreadsheet will not run as a formula (OWASP CSV injection)."""
    text = "" if value is None else value.isoformat() if isinstance(value, datetime) else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
