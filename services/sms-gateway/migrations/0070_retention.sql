-- The retention sweep (shared/retention.py) takes SMS and delivery reports oldest first; an erasure finds a
-- patient's SMS by their convocations.
create index sms_created on sms (created_at);
create index sms_report_received on sms_report (received_at);
create index sms_convocation on sms (convocation_id);
