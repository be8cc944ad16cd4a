-- One login role per service, each owning only its schema in the current database.
-- Idempotent: run by `make db`, by the test suite and by the postgres container at first start.
-- Development passwords equal the role names; production sets real ones (see deploy/README.md).
do $$
declare
    svc text;
begin
    foreach svc in array array['issuer', 'mailer', 'sms_gateway', 'access_portal', 'secretariat', 'hospital_gateway'] loop
        if not exists (select 1 from pg_roles where rolname = svc) then
            execute format('create role %I login password %L', svc, svc);
        end if;
        execute format('create schema if not exists %I authorization %I', svc, svc);
        execute format('revoke all on schema %I from public', svc);
    end loop;
end $$;
-- Nobody creates objects in public; each role reaches only its own schema.
revoke create on schema public from public;

-- The access audit, append-only for the portal (idempotent too). Its schema and table belong to
-- portal_audit, a role nobody logs in as: the portal's role may only INSERT rows and call
-- portal_audit.prune(), which deletes nothing younger than 365 days. Reading is for members of
-- portal_audit_reader (the data protection officer's login, granted by the DBA).
do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'portal_audit') then
        create role portal_audit nologin;
    end if;
    if not exists (select 1 from pg_roles where rolname = 'portal_audit_reader') then
        create role portal_audit_reader nologin;
    end if;
end $$;
create schema if not exists portal_audit authorization portal_audit;
revoke all on schema portal_audit from public;
-- Apart from business data (no foreign key either way): it outlives the messages it describes.
create table if not exists portal_audit.access_audit (
    id          bigint generated always as identity primary key,
    at          timestamptz not null default now(),
    message_id  uuid,
    action      text not null,
    outcome     text not null,
    client_hash text,
    detail      text
);
create index if not exists access_audit_message on portal_audit.access_audit (message_id, at);
create index if not exists access_audit_at on portal_audit.access_audit (at);
-- The one way rows leave: older than the retention, never younger than a year, in batches.
create or replace function portal_audit.prune(retention_days int, batch int default 10000) returns bigint
    language plpgsql security definer set search_path = pg_catalog, pg_temp as $f$
declare
    deleted bigint;
begin
    if retention_days is null or retention_days < 365 then
        raise exception 'the access audit is kept at least 365 days (asked: %)', retention_days;
    end if;
    delete from portal_audit.access_audit where id in (
        select id from portal_audit.access_audit where at < now() - make_interval(days => retention_days)
        limit greatest(batch, 1));
    get diagnostics deleted = row_count;
    return deleted;
end $f$;
-- A patient's erasure on request (docs/retention.md): the rows about their messages stay, as a record that the
-- accesses happened, without the message, the client or the detail.
create or replace function portal_audit.erase(message_ids uuid[]) returns bigint
    language plpgsql security definer set search_path = pg_catalog, pg_temp as $f$
declare
    changed bigint;
begin
    update portal_audit.access_audit set message_id = null, client_hash = null, detail = null
        where message_id = any(message_ids);
    get diagnostics changed = row_count;
    return changed;
end $f$;
alter table portal_audit.access_audit owner to portal_audit;
alter function portal_audit.prune(int, int) owner to portal_audit;
alter function portal_audit.erase(uuid[]) owner to portal_audit;
revoke all on function portal_audit.prune(int, int), portal_audit.erase(uuid[]) from public;
grant usage on schema portal_audit to access_portal, portal_audit_reader;
grant insert on portal_audit.access_audit to access_portal;
grant execute on function portal_audit.prune(int, int), portal_audit.erase(uuid[]) to access_portal;
grant select on portal_audit.access_audit to portal_audit_reader;

-- The staff audit, append-only for the secretariat (idempotent, as above): schema, table and functions
-- belong to secretariat_audit, a role nobody logs in as. The secretariat's role may only INSERT rows,
-- call secretariat_audit.prune() (nothing younger than 365 days) and read through
-- secretariat_audit.read() (the supervisors' page and CSV export); members of secretariat_audit_reader
-- (the data protection officer's login, granted by the DBA) may SELECT.
do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'secretariat_audit') then
        create role secretariat_audit nologin;
    end if;
    if not exists (select 1 from pg_roles where rolname = 'secretariat_audit_reader') then
        create role secretariat_audit_reader nologin;
    end if;
end $$;
create schema if not exists secretariat_audit authorization secretariat_audit;
revoke all on schema secretariat_audit from public;
create table if not exists secretariat_audit.staff_audit (
    id             bigint generated always as identity primary key,
    at             timestamptz not null default now(),
    subject        text not null,
    name           text not null,
    via            text not null check (via in ('console', 'api')),
    action         text not null,
    convocation_id uuid,
    department     text,
    reason         text,
    outcome        text not null,
    detail         text
);
create index if not exists staff_audit_at on secretariat_audit.staff_audit (at);
create or replace function secretariat_audit.prune(retention_days int, batch int default 10000) returns bigint
    language plpgsql security definer set search_path = pg_catalog, pg_temp as $f$
declare
    deleted bigint;
begin
    if retention_days is null or retention_days < 365 then
        raise exception 'the staff audit is kept at least 365 days (asked: %)', retention_days;
    end if;
    delete from secretariat_audit.staff_audit where id in (
        select id from secretariat_audit.staff_audit where at < now() - make_interval(days => retention_days)
        limit greatest(batch, 1));
    get diagnostics deleted = row_count;
    return deleted;
end $f$;
-- Rows from since (inclusive) to until (exclusive), newest first, at most latest of them (null: all).
create or replace function secretariat_audit.read(since timestamptz default null, until timestamptz default null,
                                                  latest int default null)
    returns setof secretariat_audit.staff_audit
    language sql stable security definer set search_path = pg_catalog, pg_temp as $f$
    select * from secretariat_audit.staff_audit
    where (since is null or at >= since) and (until is null or at < until) order by id desc limit latest
$f$;
alter table secretariat_audit.staff_audit owner to secretariat_audit;
alter function secretariat_audit.prune(int, int) owner to secretariat_audit;
alter function secretariat_audit.read(timestamptz, timestamptz, int) owner to secretariat_audit;
revoke all on function secretariat_audit.prune(int, int) from public;
revoke all on function secretariat_audit.read(timestamptz, timestamptz, int) from public;
grant usage on schema secretariat_audit to secretariat, secretariat_audit_reader;
grant insert on secretariat_audit.staff_audit to secretariat;
grant execute on function secretariat_audit.prune(int, int) to secretariat;
grant execute on function secretariat_audit.read(timestamptz, timestamptz, int) to secretariat;
grant select on secretariat_audit.staff_audit to secretariat_audit_reader;

-- The staff audit's time and actor come from the database, not from the service (issue 21): whatever
-- the service's role writes in `at`, `subject`, `name` or `via`, the trigger puts the database's clock
-- and the person of the open staff session named by `session_hash` instead; a row without a session is
-- anonymous (a refusal before anyone signed in). Sessions live here too, opened only through
-- open_session(), which writes the opening (sign-in, or an API token's first use) into the audit
-- itself: the database cannot check the identity provider's tokens, but every name a row carries was
-- opened as a session at a time the audit shows.
alter table secretariat_audit.staff_audit add column if not exists session_hash text;
alter table secretariat_audit.staff_audit add column if not exists carried_at timestamptz;
create index if not exists staff_audit_convocation on secretariat_audit.staff_audit (convocation_id);
create index if not exists staff_audit_subject on secretariat_audit.staff_audit (subject, id);
create table if not exists secretariat_audit.staff_session (
    token_hash   text primary key,
    subject      text not null,
    name         text not null,
    via          text not null check (via in ('console', 'api')),
    roles        text[] not null,
    departments  text[] not null,
    created_at   timestamptz not null default now(),
    last_seen_at timestamptz not null default now(),
    ended_at     timestamptz
);
-- Set once the rows of the service's own audit table (before migration 0002) were carried over, or
-- when this audit already holds rows: the carry-over runs once.
create table if not exists secretariat_audit.carried_over (done boolean primary key check (done));
insert into secretariat_audit.carried_over
    select true where exists (select from secretariat_audit.staff_audit) on conflict do nothing;

-- The person of an open session (at most a day old), or nothing.
create or replace function secretariat_audit.session_actor(hash text)
    returns table (subject text, name text, via text)
    language sql stable security definer set search_path = pg_catalog, pg_temp as $f$
    select s.subject, s.name, s.via from secretariat_audit.staff_session s
    where s.token_hash = hash and s.ended_at is null and s.created_at > now() - interval '1 day'
$f$;
create or replace function secretariat_audit.stamp_row() returns trigger
    language plpgsql set search_path = pg_catalog, pg_temp as $f$
declare
    actor record;
begin
    if current_user = 'secretariat_audit' then  -- written by this schema's own functions
        return new;
    end if;
    new.at := now();
    new.carried_at := null;
    select a.subject, a.name, a.via into actor from secretariat_audit.session_actor(new.session_hash) a;
    if new.session_hash is not null and actor.subject is null then
        raise exception 'the staff session named is not open';
    end if;
    new.subject := coalesce(actor.subject, '');
    new.name := coalesce(actor.name, '');
    new.via := coalesce(actor.via, new.via);
    return new;
end $f$;
drop trigger if exists stamp_row on secretariat_audit.staff_audit;
create trigger stamp_row before insert on secretariat_audit.staff_audit
    for each row execute function secretariat_audit.stamp_row();
create or replace function secretariat_audit.open_session(hash text, subject text, name text, via text,
                                                          roles text[], departments text[])
    returns void language plpgsql security definer set search_path = pg_catalog, pg_temp as $f$
begin
    insert into secretariat_audit.staff_session(token_hash, subject, name, via, roles, departments)
        values (hash, subject, name, via, roles, departments) on conflict (token_hash) do nothing;
    if found then
        insert into secretariat_audit.staff_audit(subject, name, via, action, outcome, session_hash)
            values (subject, name, via, case via when 'api' then 'api-token' else 'sign-in' end, 'ok', hash);
    end if;
end $f$;
-- The open session, if neither idle nor older than absolute_seconds; marked used now when ``used`` (not
-- for the timeline's own refreshes, which must not keep an unattended console signed in).
create or replace function secretariat_audit.touch_session(hash text, idle_seconds int, absolute_seconds int,
                                                           used boolean)
    returns setof secretariat_audit.staff_session
    language sql security definer set search_path = pg_catalog, pg_temp as $f$
    update secretariat_audit.staff_session set last_seen_at = case when used then now() else last_seen_at end
    where token_hash = hash and ended_at is null and last_seen_at > now() - make_interval(secs => idle_seconds)
      and created_at > now() - make_interval(secs => absolute_seconds)
    returning *
$f$;
create or replace function secretariat_audit.end_session(hash text) returns void
    language plpgsql security definer set search_path = pg_catalog, pg_temp as $f$
declare
    s secretariat_audit.staff_session;
begin
    update secretariat_audit.staff_session set ended_at = now() where token_hash = hash and ended_at is null
        returning * into s;
    if found then
        insert into secretariat_audit.staff_audit(subject, name, via, action, outcome, session_hash)
            values (s.subject, s.name, s.via, 'sign-out', 'ok', hash);
    end if;
end $f$;
-- Migration 0002: the rows of the service's own audit table, with their times and names, once; each
-- carried row says when it was carried.
create or replace function secretariat_audit.carry_over() returns bigint
    language plpgsql security definer set search_path = pg_catalog, pg_temp as $f$
declare
    moved bigint;
begin
    if exists (select from secretariat_audit.carried_over) then
        if exists (select from secretariat.staff_audit) then
            raise exception 'the staff audit was carried over already';
        end if;
        return 0;
    end if;
    insert into secretariat_audit.staff_audit(at, subject, name, via, action, convocation_id, department, reason,
                                              outcome, detail, carried_at)
        select at, subject, name, via, action, convocation_id, department, reason, outcome, detail, now()
        from secretariat.staff_audit order by id;
    get diagnostics moved = row_count;
    insert into secretariat_audit.carried_over values (true);
    return moved;
end $f$;
-- The supervisors' page: rows matching every filter given, newest first, older than before_id, at most latest.
create or replace function secretariat_audit.search(since timestamptz, until timestamptz, person text, act text,
                                                    convocation uuid, before_id bigint, latest int)
    returns setof secretariat_audit.staff_audit
    language sql stable security definer set search_path = pg_catalog, pg_temp as $f$
    select * from secretariat_audit.staff_audit
    where (since is null or at >= since) and (until is null or at < until)
      and (person is null or subject = person or position(lower(person) in lower(name)) > 0)
      and (act is null or action = act) and (convocation is null or convocation_id = convocation)
      and (before_id is null or id < before_id)
    order by id desc limit latest
$f$;
-- A patient's erasure on request (docs/retention.md): the rows about their convocations stay, as a record of who
-- did what and when, without the convocation, its department, the reason or the detail.
create or replace function secretariat_audit.erase(convocation_ids uuid[]) returns bigint
    language plpgsql security definer set search_path = pg_catalog, pg_temp as $f$
declare
    changed bigint;
begin
    update secretariat_audit.staff_audit set convocation_id = null, department = null, reason = null, detail = null
        where convocation_id = any(convocation_ids);
    get diagnostics changed = row_count;
    return changed;
end $f$;
alter function secretariat_audit.erase(uuid[]) owner to secretariat_audit;
revoke all on function secretariat_audit.erase(uuid[]) from public;
grant execute on function secretariat_audit.erase(uuid[]) to secretariat;
alter table secretariat_audit.staff_session owner to secretariat_audit;
alter table secretariat_audit.carried_over owner to secretariat_audit;
alter function secretariat_audit.session_actor(text) owner to secretariat_audit;
alter function secretariat_audit.stamp_row() owner to secretariat_audit;
alter function secretariat_audit.open_session(text, text, text, text, text[], text[]) owner to secretariat_audit;
alter function secretariat_audit.touch_session(text, int, int, boolean) owner to secretariat_audit;
alter function secretariat_audit.end_session(text) owner to secretariat_audit;
alter function secretariat_audit.carry_over() owner to secretariat_audit;
alter function secretariat_audit.search(timestamptz, timestamptz, text, text, uuid, bigint, int)
    owner to secretariat_audit;
revoke all on function secretariat_audit.session_actor(text), secretariat_audit.open_session(text, text, text, text, text[], text[]),
    secretariat_audit.touch_session(text, int, int, boolean), secretariat_audit.end_session(text), secretariat_audit.carry_over(),
    secretariat_audit.search(timestamptz, timestamptz, text, text, uuid, bigint, int) from public;
grant execute on function secretariat_audit.session_actor(text), secretariat_audit.open_session(text, text, text, text, text[], text[]),
    secretariat_audit.touch_session(text, int, int, boolean), secretariat_audit.end_session(text), secretariat_audit.carry_over(),
    secretariat_audit.search(timestamptz, timestamptz, text, text, uuid, bigint, int) to secretariat;
grant select on secretariat_audit.staff_session to secretariat_audit_reader;
-- secretariat_owner (the migration Job's role, where there is one: the Kubernetes cluster) runs 0002's carry-over.
do $$
begin
    if exists (select from pg_roles where rolname = 'secretariat_owner') then
        grant execute on function secretariat_audit.carry_over() to secretariat_owner;
    end if;
end $$;

-- The operators' record (idempotent, as above): what `convocations-admin` did, by whom and why (every
-- dead letter replayed or purged, every dead-letter queue migrated). Schema and table belong to
-- operations, a role nobody logs in as; the tool logs in as convocations_admin, which may only INSERT
-- rows and read them back. Nobody changes or deletes a row. Members of operations_reader may read it.
do $$
declare
    role_name text;
begin
    foreach role_name in array array['operations', 'operations_reader', 'convocations_admin'] loop
        if not exists (select 1 from pg_roles where rolname = role_name) then
            execute format('create role %I nologin', role_name);
        end if;
    end loop;
    -- The tool's login (development password = the role's name, as the services').
    alter role convocations_admin login password 'convocations_admin';
end $$;
create schema if not exists operations authorization operations;
revoke all on schema operations from public;
create table if not exists operations.dlq_action (
    id                 bigint generated always as identity primary key,
    at                 timestamptz not null default now(),
    operator           text not null,
    action             text not null check (action in ('replay', 'purge', 'migrate')),
    why                text,           -- the operator's reason (required for a purge)
    queue              text not null,  -- the dead-letter queue
    event_id           text,           -- the dead letter's message id (none for a migration)
    event_type         text,
    dead_letter_reason text,           -- why it was dead-lettered (x-rejected-reason or x-death)
    detail             text            -- e.g. how many letters a migration moved; never a body
);
create index if not exists dlq_action_at on operations.dlq_action (at);
create index if not exists dlq_action_event on operations.dlq_action (event_id);
alter table operations.dlq_action owner to operations;
grant usage on schema operations to convocations_admin, operations_reader;
grant insert, select on operations.dlq_action to convocations_admin;
grant select on operations.dlq_action to operations_reader;
