-- The staff audit moves to the schema secretariat_audit (deploy/postgres/init.sql and the Postgres
-- cluster's bootstrap create it), where this service's role may only append rows, prune through
-- secretariat_audit.prune() and read through secretariat_audit.read(); it could drop the trigger that
-- guarded the table here, as its owner. The rows kept so far move with it.
insert into secretariat_audit.staff_audit(at, subject, name, via, action, convocation_id, department, reason,
                                          outcome, detail)
    select at, subject, name, via, action, convocation_id, department, reason, outcome, detail
    from staff_audit order by id;
drop table staff_audit;
drop function staff_audit_append_only();
