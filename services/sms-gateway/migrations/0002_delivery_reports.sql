-- Delivery states, provider attempts and delivery reports. Still no number in clear (only its
-- keyed hash in sms.phone_hash) and never the code.
alter table sms drop constraint sms_status_check;
alter table sms add constraint sms_status_check
    check (status in ('retrying', 'queued', 'sent', 'delivered', 'failed'));
alter table sms add column otp_event_id uuid;          -- the otp.requested event: causation of sms.failed
alter table sms add column error_code text;            -- provider error code, or our refusal code
alter table sms add column updated_at timestamptz not null default now();
-- The hourly caps count SMS a provider accepted (sent_at set), per number and overall.
create index sms_number_sent on sms (phone_hash, sent_at) where sent_at is not null;
create index sms_sent on sms (sent_at) where sent_at is not null;

create table sms_attempt (
    id            bigint generated always as identity primary key,
    challenge_id  uuid not null references sms (challenge_id),
    attempt       int not null,
    provider      text not null,
    outcome       text not null check (outcome in ('accepted', 'transient', 'permanent')),
    error_code    text,
    detail        text,
    at            timestamptz not null default now()
);
create index sms_attempt_challenge on sms_attempt (challenge_id);

-- Every authenticated delivery report, as received (without the number it names).
create table sms_report (
    id                  bigint generated always as identity primary key,
    provider            text not null,
    provider_message_id text not null,
    provider_status     text not null,
    error_code          text,
    outcome             text not null check (outcome in ('applied', 'stale', 'ignored', 'unmatched')),
    received_at         timestamptz not null default now()
);
create index sms_report_message on sms_report (provider, provider_message_id);
create index sms_report_unmatched on sms_report (provider, provider_message_id) where outcome = 'unmatched';
