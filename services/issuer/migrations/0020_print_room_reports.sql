-- The print room's reports on a paper letter (printed, posted, returned as undeliverable). The print
-- room's copy is now kept until the letter is printed, not only until it is handed over: a paper letter
-- the secretariat switches back to e-mail before it is printed can still go on paper later.
alter table convocation add column printed_at timestamptz;
alter table convocation add column posted_at timestamptz;
alter table convocation add column returned_at timestamptz;
alter table reissue_request drop constraint reissue_request_reason_check;
alter table reissue_request add constraint reissue_request_reason_check
    check (reason in ('resend', 'email-corrected', 'email-instead'));
-- When the secretariat switched the letter back to e-mail before it was printed (the print room was told
-- to drop it); the letter may be posted again later.
alter table convocation add column postal_cancelled_at timestamptz;
