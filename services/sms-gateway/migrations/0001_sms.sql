-- One row per code to text, with its provider attempts. The number is kept only as a keyed hash;
-- the code itself is never stored.
create table sms (
    challenge_id        uuid primary key,
    message_id          uuid not null,
    convocation_id      uuid not null,
    phone_hash          text not null,
    country             text,
    provider            text,
    provider_message_id text,
    status              text not null check (status in ('retrying', 'sent', 'delivered', 'failed')),
    attempts            int not null default 0,
    last_error          text,
    created_at          timestamptz not null default now(),
    sent_at             timestamptz,
    final_at            timestamptz
);
create unique index sms_provider_message on sms (provider, provider_message_id);
