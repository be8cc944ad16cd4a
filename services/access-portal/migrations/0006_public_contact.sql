-- The contact shown before the code (the hospital's public desk); the secretariat's only after it.
alter table message add column public_phone text;
alter table message add column public_email text;
