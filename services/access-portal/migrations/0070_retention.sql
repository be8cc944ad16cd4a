-- The retention sweep (shared/retention.py) takes messages and bindings oldest first, and deletes a message's
-- sessions with it.
create index message_expires on message (expires_at);
create index session_message on session (message_id);
create index phone_binding_bound on phone_binding (bound_at);
