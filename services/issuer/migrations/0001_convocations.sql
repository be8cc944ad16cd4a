-- Convocations and their delivery status. No document, link secret, e-mail or phone is kept here.
create table convocation (
    id              uuid primary key,               -- upstream convocation id (= correlation id)
    message_id      uuid not null unique,
    patient_ref     text not null,                  -- keyed hash of the patient id
    delivery        text not null check (delivery in ('email', 'postal')),
    language        text not null,
    status          text not null,
    appointment_at  timestamptz not null,
    expires_at      timestamptz not null,
    created_at      timestamptz not null,           -- when upstream created it (event time)
    sealed_at       timestamptz,
    emailed_at      timestamptz,
    email_failed_at timestamptz,
    downloaded_at   timestamptz,
    postal_at       timestamptz,
    cancelled_at    timestamptz,
    updated_at      timestamptz not null default now()
);
create index convocation_patient on convocation (patient_ref);

create table status_history (
    id              bigint generated always as identity primary key,
    convocation_id  uuid not null references convocation (id),
    status          text not null,
    at              timestamptz not null,
    detail          text
);
create index status_history_convocation on status_history (convocation_id, id);
