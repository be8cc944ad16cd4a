-- The patient asked, after the code, for this convocation by post (once; the issuer posts it).
alter table message add column postal_requested_at timestamptz;
