-- A number proven only through a link binds that message only (proven_*); only the number on file,
-- once proven, binds the patient's later letters. First-use bindings made before this end here: the
-- patient types the number again once, on the next letter without a number on file.
alter table message add column proven_hash text, add column proven_hint text, add column proven_enc text;
delete from phone_binding where source = 'first-use';
alter table phone_binding drop constraint phone_binding_source_check,
    add constraint phone_binding_source_check check (source = 'hospital');

-- A number that is not the one on file gets a decoy: a challenge whose code nobody knows and that is
-- never texted. The portal then answers it exactly as it answers the right number (same pages, same
-- waits, same code form), so typing numbers tells nothing; the decoy never replaces a real code.
alter table challenge alter column phone_enc drop not null, add column decoy boolean not null default false;
