-- Sandbox tests (message.sealed sandbox): their code requests say so (otp.requested sandbox), so that the
-- sms-gateway texts them only to its sandbox provider.
alter table message add column sandbox boolean not null default false;
