-- Every ref the issuer knew the patient by when it sealed the message (one per PATIENT_REF_KEY key):
-- what the secretariat asks for the patient (reset the binding, correct the number) then reaches what
-- was recorded under an older key too. Null for messages stored before (their patient_ref alone) and for
-- those a replica of the previous release stores during the rolling update.
alter table message add column patient_refs text[];
update message set patient_refs = array[patient_ref];
create index message_patient_refs on message using gin (patient_refs);
create index message_patient_ref on message (patient_ref);
