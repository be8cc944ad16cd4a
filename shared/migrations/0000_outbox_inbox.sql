-- Transactional outbox and idempotent inbox, created in every service's own schema.
create table outbox (
    id             bigint generated always as identity primary key,
    event_id       uuid not null,                -- the AMQP message_id; a delayed retry reuses it
    exchange       text,                         -- null: the events exchange
    routing_key    text not null,
    event_type     text not null,
    correlation_id uuid not null,
    body           bytea not null,               -- the JSON envelope, as published
    headers        jsonb not null default '{}'::jsonb,
    created_at     timestamptz not null default now(),
    attempts       int not null default 0,
    last_error     text
);

create unique index outbox_event_target on outbox (event_id, routing_key);

-- Wake the relay at commit (NOTIFY is delivered only when the transaction commits).
create function outbox_notify() returns trigger language plpgsql as $$
begin
    perform pg_notify(tg_table_schema || '_outbox', '');
    return null;
end $$;
create trigger outbox_notify after insert on outbox for each statement execute function outbox_notify();

create table inbox (
    event_id    uuid primary key,
    routing_key text not null,
    received_at timestamptz not null default now()
);
create index inbox_received_at on inbox (received_at);
