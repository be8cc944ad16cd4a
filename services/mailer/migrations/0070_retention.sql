-- The retention sweep (shared/retention.py) takes the e-mails past their retention oldest first.
create index email_retention on email ((coalesce(expires_at, created_at)));
