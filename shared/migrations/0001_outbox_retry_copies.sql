-- Two delayed retries of one event may briefly share event id and routing key (the second is
-- scheduled before the relay deleted the first): consumers deduplicate, the outbox must not refuse.
drop index if exists outbox_event_target;
alter table outbox drop constraint if exists outbox_event_id_key;
create index outbox_event on outbox (event_id);
