-- Sandbox tests (message.sealed sandbox): their e-mails, and the notices about them, go only to the sandbox
-- SMTP endpoint.
alter table email add column sandbox boolean not null default false;
