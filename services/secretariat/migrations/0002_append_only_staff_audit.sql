-- The staff audit moves to the schema secretariat_audit (deploy/postgres/init.sql and the Postgres
-- cluster's bootstrap create it), where this service's role may only append rows (the database sets
-- their time and actor), prune through secretariat_audit.prune() and read through its functions; it
-- could drop the trigger that guarded the table here, as its owner. The rows kept so far move with it,
-- with their times and names, once (secretariat_audit.carry_over(), which reads them as their new owner).
grant usage on schema secretariat to secretariat_audit;
grant select on staff_audit to secretariat_audit;
select secretariat_audit.carry_over();
drop table staff_audit;
drop function staff_audit_append_only();
revoke usage on schema secretariat from secretariat_audit;
