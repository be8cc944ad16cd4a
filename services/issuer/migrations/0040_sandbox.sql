-- Sandbox tests (convocation.created sandbox, from an integrator's sandbox credentials): carried on every
-- status and message.sealed, and never handed to the print room.
alter table convocation add column sandbox boolean not null default false;
