-- One row per message to e-mail, with its attempts. No address, name or link is kept.
create table email (
    message_id      uuid primary key,
    convocation_id  uuid not null,
    smtp_message_id text not null,
    status          text not null check (status in ('retrying', 'sent', 'failed')),
    attempts        int not null default 0,
    last_code       int,
    last_error      text,
    created_at      timestamptz not null default now(),
    sent_at         timestamptz,
    failed_at       timestamptz
);
