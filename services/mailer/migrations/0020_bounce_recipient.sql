-- A hard bounce counts only for the address the e-mail went to: a report naming another recipient (a
-- forwarded copy that bounced, a forged report) changes nothing. The address is kept as a keyed hash
-- (HMAC under MAILER_FIELD_KEY, "kid:hex"), never in clear. E-mails sent before this release have none:
-- their bounces are judged as before.
alter table bounce_token add column recipient_hash text;
