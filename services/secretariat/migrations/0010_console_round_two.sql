-- The console, round two (issue 21).
-- Who the patient is, for the staff of the letter's department: name, date of birth and place sealed
-- under SECRETARIAT_FIELD_KEY (never in clear); searched through keyed hashes of each word of the
-- normalised name and of the date of birth (SECRETARIAT_SECRET_KEY), never by opening every row.
alter table convocation add column patient_enc text;
alter table convocation add column name_index text[];
alter table convocation add column birth_index text;
alter table convocation add column department_name text;
create index convocation_name_index on convocation using gin (name_index);
create index convocation_birth_index on convocation (birth_index);
-- The steps the figures and the rules need: first sealing and e-mail, why paper, the print room's reports,
-- the first lock-out.
alter table convocation add column first_sealed_at timestamptz;
alter table convocation add column emailed_at timestamptz;
alter table convocation add column postal_reason text;
alter table convocation add column printed_at timestamptz;
alter table convocation add column posted_at timestamptz;
alter table convocation add column returned_at timestamptz;
alter table convocation add column return_reason text;
alter table convocation add column first_locked_at timestamptz;
create index convocation_sealed on convocation (department, first_sealed_at);
-- Whether the patient has a verified number (the portal's binding), by the issuer's patient ref.
create table patient_binding (
    patient_ref text primary key,
    bound       boolean not null,
    at          timestamptz not null
);
-- Staff sessions moved to secretariat_audit.staff_session (deploy/postgres/init.sql): the audit takes each
-- row's actor from there. Everyone signs in again after this release.
drop table staff_session;
-- When the print room was last told to drop the letter (a later paper request clears it).
alter table convocation add column paper_cancelled_at timestamptz;
-- Letters from before this release: their steps from the timeline, so that the figures count them too
-- (who the patient is comes only with letters sealed from now on).
update convocation c set
    first_sealed_at = t.sealed, emailed_at = coalesce(c.emailed_at, t.emailed), first_locked_at = t.locked,
    postal_reason = coalesce(c.postal_reason, t.paper_reason)
from (select convocation_id,
             min(at) filter (where kind = 'sealed') as sealed,
             min(at) filter (where kind = 'e-mailed') as emailed,
             min(at) filter (where kind = 'locked') as locked,
             (array_agg(detail order by at) filter (where kind in ('postal', 'postal-fallback')))[1] as paper_reason
      from timeline group by convocation_id) t
where t.convocation_id = c.id;
