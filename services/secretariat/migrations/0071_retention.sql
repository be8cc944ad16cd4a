-- The retention sweep (shared/retention.py) takes convocations and timeline lines oldest first.
create index convocation_retention on convocation ((coalesce(appointment_at, updated_at)));
create index timeline_at on timeline (at);
