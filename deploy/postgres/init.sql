-- One login role per service, each owning only its schema in the current database.
-- Idempotent: run by `make db`, by the test suite and by the postgres container at first start.
-- Development passwords equal the role names; production sets real ones (see deploy/README.md).
do $$
declare
    svc text;
begin
    foreach svc in array array['issuer', 'mailer', 'sms_gateway', 'access_portal'] loop
        if not exists (select 1 from pg_roles where rolname = svc) then
            execute format('create role %I login password %L', svc, svc);
        end if;
        execute format('create schema if not exists %I authorization %I', svc, svc);
        execute format('revoke all on schema %I from public', svc);
    end loop;
end $$;
-- Nobody creates objects in public; each role reaches only its own schema.
revoke create on schema public from public;
