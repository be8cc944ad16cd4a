-- The retention sweep (shared/retention.py) takes the convocations past their retention oldest first: by expiry.
create index convocation_expires on convocation (expires_at);
