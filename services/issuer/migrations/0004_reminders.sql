-- When the patient was reminded that the letter is still not downloaded (once per message).
alter table convocation add column reminded_at timestamptz;
create index convocation_reminder on convocation (appointment_at)
    where reminded_at is null and downloaded_at is null and postal_at is null;
