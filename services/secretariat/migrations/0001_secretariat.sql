-- The secretariat's read model (built from events), its actions, staff sessions and the staff audit.
-- No patient data in clear: the patient id only as the issuer's keyed hash, the number only masked.
create table convocation (
    id             uuid primary key,
    message_id     uuid,
    patient_ref    text,
    department     text,
    appointment_at timestamptz,
    delivery       text,
    status         text,
    status_at      timestamptz,
    bounced_at     timestamptz,
    downloaded_at  timestamptz,
    postal_at      timestamptz,
    locked_until   timestamptz,
    phone_hint     text,
    updated_at     timestamptz not null default now()
);
create index convocation_patient on convocation (patient_ref);
create index convocation_department on convocation (department, appointment_at);

create table timeline (
    id             bigint generated always as identity primary key,
    convocation_id uuid not null,
    event_id       uuid not null unique,
    at             timestamptz not null,
    kind           text not null,
    detail         text,
    action_id      uuid
);
create index timeline_convocation on timeline (convocation_id, at);

create table action (
    id             uuid primary key,
    convocation_id uuid not null,
    message_id     uuid not null,
    department     text,
    kind           text not null,
    staff_subject  text not null,
    requested_at   timestamptz not null default now(),
    done_at        timestamptz
);
create index action_convocation on action (convocation_id, requested_at);

create table staff_session (
    token_hash    text primary key,
    subject       text not null,
    name          text not null,
    roles         text[] not null,
    departments   text[] not null,
    created_at    timestamptz not null default now(),
    last_seen_at  timestamptz not null default now(),
    ended_at      timestamptz
);

-- Every search, view and action by staff: who, what, when, why, outcome. Apart from the read model,
-- append-only for this role (rows are only removed once past the retention).
create table staff_audit (
    id             bigint generated always as identity primary key,
    at             timestamptz not null default now(),
    subject        text not null,
    name           text not null,
    via            text not null check (via in ('console', 'api')),
    action         text not null,
    convocation_id uuid,
    department     text,
    reason         text,
    outcome        text not null,
    detail         text
);
create index staff_audit_at on staff_audit (at);

create function staff_audit_append_only() returns trigger language plpgsql as $$
begin
    if tg_op = 'DELETE' and old.at < now() - interval '366 days' then
        return old;
    end if;
    raise exception 'staff_audit is append-only';
end $$;
create trigger staff_audit_append_only before update or delete on staff_audit
    for each row execute function staff_audit_append_only();
