-- Erasures on request (issue 17): when each was asked and which services confirmed it, with counts only. Nothing
-- about the patient: who asked and why are in the staff audit, under the erasure's id.
create table erasure (
    id           uuid primary key,
    requested_at timestamptz not null default now()
);
create index erasure_requested on erasure (requested_at);

create table erasure_confirmation (
    erasure_id    uuid not null,
    service       text not null,
    convocations  int not null,
    rows          bigint not null,
    confirmed_at  timestamptz not null,
    primary key (erasure_id, service)
);
