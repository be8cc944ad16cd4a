-- What became of each message's paper copy, as the issuer reports it (postal.progress): who asked for
-- paper and when, then the print room's steps. Kept apart from the message row, so a report that comes
-- before its message (they travel on two queues) is not lost; the pages read both.
create table paper (
    message_id   uuid primary key,
    reason       text,            -- preference, no-email, email-failed, not-downloaded, secretariat, patient-request
    requested_at timestamptz,     -- null once the print room was told to drop it (paper may be asked again)
    printed_at   timestamptz,
    posted_at    timestamptz,
    returned_at  timestamptz,
    updated_at   timestamptz not null default now()
);
