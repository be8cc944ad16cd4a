-- Sealed messages, phone bindings, OTP challenges, sessions and releases. Numbers are kept only as
-- keyed hashes, masked hints and ciphertext; codes only as keyed hashes; documents only sealed.
create table message (
    message_id          uuid primary key,
    convocation_id      uuid not null,
    patient_ref         text not null,
    language            text not null,
    key_id              text not null,
    document_nonce      bytea,
    document_ciphertext bytea,
    details_nonce       bytea,
    details_ciphertext  bytea,
    expires_at          timestamptz not null,
    secretariat_phone   text not null,
    secretariat_email   text,
    phone_hash          text,            -- number on file, keyed hash
    phone_hint          text,            -- '+41 79 *** ** 34'
    phone_enc           text,            -- number on file, encrypted under the portal's key
    state               text not null default 'active' check (state in ('active', 'revoked', 'expired')),
    revoked_reason      text,
    failed_checks       int not null default 0,   -- wrong codes over all of this message's challenges
    locked_until        timestamptz,
    emailed_at          timestamptz,
    created_at          timestamptz not null default now()
);
create index message_convocation on message (convocation_id);

create table phone_binding (
    patient_ref text primary key,
    phone_hash  text not null,
    phone_hint  text not null,
    phone_enc   text not null,
    source      text not null check (source in ('hospital', 'first-use')),
    bound_at    timestamptz not null default now()
);

create table challenge (
    id             uuid primary key,
    message_id     uuid not null references message (message_id),
    code_hash      text not null,
    phone_hash     text not null,
    phone_hint     text not null,
    phone_enc      text not null,
    bind_source    text,            -- set when a correct code must bind this number
    created_at     timestamptz not null default now(),
    expires_at     timestamptz not null,
    wrong          int not null default 0,
    status         text not null default 'active' check (status in ('active', 'used', 'dead')),
    sms_failed     boolean not null default false
);
create index challenge_message on challenge (message_id, created_at desc);
create index challenge_phone on challenge (phone_hash, created_at);

create table session (
    token_hash   text primary key,
    message_id   uuid not null references message (message_id),
    created_at   timestamptz not null default now(),
    last_seen_at timestamptz not null default now(),
    ended_at     timestamptz
);

create table release (
    message_id  uuid not null references message (message_id),
    kind        text not null,
    released_at timestamptz not null default now(),
    primary key (message_id, kind)
);

-- Access audit, apart from business data (no foreign keys: it outlives what it describes).
create table access_audit (
    id          bigint generated always as identity primary key,
    at          timestamptz not null default now(),
    message_id  uuid,
    action      text not null,
    outcome     text not null,
    client_hash text,
    detail      text
);
create index access_audit_message on access_audit (message_id, at);
create index access_audit_at on access_audit (at);
