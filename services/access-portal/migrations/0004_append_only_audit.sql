-- The access audit moves to the schema portal_audit (deploy/postgres/init.sql creates it), where
-- this role may only append rows and prune through portal_audit.prune(); the rows kept so far move with it.
insert into portal_audit.access_audit(at, message_id, action, outcome, client_hash, detail)
    select at, message_id, action, outcome, client_hash, detail from access_audit order by id;
drop table access_audit;
