-- The hospital gateway's own tables. No patient data: ids of messages and appointments, and what became of them.

-- Every message (or FHIR entry, or CSV line) accepted: its id makes a repeat a duplicate, its event id lets the
-- issuer's status confirm it.
create table received (
    system          text not null,
    control_id      text not null,          -- MSH-10, or the request id (X-Request-Id, Bundle.identifier) and entry
    via             text not null check (via in ('hl7', 'fhir', 'csv')),
    action          text not null check (action in ('created', 'cancelled')),
    convocation_id  uuid not null,
    event_id        uuid not null,          -- the convocation.created or .cancelled published
    received_at     timestamptz not null default now(),
    confirmed_at    timestamptz,            -- the issuer reported on it (its status names the event as cause)
    dead_lettered_at timestamptz,           -- not confirmed in time: see dead_letter
    primary key (system, control_id)
);
create index received_event on received (event_id);
create index received_waiting on received (received_at) where confirmed_at is null and dead_lettered_at is null;
create index received_age on received (received_at);

-- The convocations made from each system's appointments: where their statuses go back, and as what.
create table appointment (
    convocation_id  uuid primary key,
    system          text not null,
    appointment_id  text not null,          -- the hospital's (SCH-1, Appointment.identifier, CSV appointment_id)
    sandbox         boolean not null,
    appointment_at  timestamptz,
    cancelled_at    timestamptz,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    unique (system, appointment_id)
);
create index appointment_at on appointment (appointment_at);

-- Accepted messages that did not become a letter: the reason, for the operator (and an alert).
create table dead_letter (
    id              bigint generated always as identity primary key,
    system          text not null,
    control_id      text not null,
    convocation_id  uuid not null,
    event_id        uuid not null,
    reason          text not null,
    detail          text not null,
    at              timestamptz not null default now()
);
create index dead_letter_at on dead_letter (at);

-- Statuses and requests sent back to the hospital systems, with their attempts.
create table delivery (
    event_id        uuid primary key,       -- the convocation.status or .reissue.requested delivered
    convocation_id  uuid not null,
    system          text not null,
    kind            text not null,          -- the status, or 'reissue'
    status          text not null check (status in ('sent', 'retrying', 'failed')),
    attempts        int not null,
    last_error      text,
    updated_at      timestamptz not null default now()
);
create index delivery_updated on delivery (updated_at);
