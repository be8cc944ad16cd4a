-- When the provider accepted the code's SMS (sms.sent): the code page can say it is on its way.
alter table challenge add column sms_sent_at timestamptz;
