-- Letters the department's secretariat asked to send again (resend, or a corrected e-mail address):
-- waiting until the hospital system republishes the convocation, then used once by the new message.
-- The corrected address only as the secretariat sealed it for the issuer (ISSUER_FIELD_KEY, bound to
-- the action id): never in clear.
create table reissue_request (
    action_id      uuid primary key,                -- the secretariat's action
    convocation_id uuid not null references convocation (id),
    reason         text not null check (reason in ('resend', 'email-corrected')),
    email_sealed   text,                            -- for 'email-corrected': {email}, sealed for the issuer
    requested_at   timestamptz not null,
    consumed_at    timestamptz,                     -- when a republished convocation used it
    message_id     uuid                             -- the new message it was used for
);
create index reissue_request_pending on reissue_request (convocation_id) where consumed_at is null;
create index reissue_request_message on reissue_request (message_id) where message_id is not null;
