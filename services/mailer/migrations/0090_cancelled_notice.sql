-- A cancellation by the hospital and a withdrawal by the secretariat are told apart: each has its own
-- notice (before, a cancellation was sent as 'withdrawn' and a withdrawal was not told at all).
alter table notice drop constraint notice_kind_check;
alter table notice add constraint notice_kind_check check (kind in ('cancelled', 'withdrawn', 'reminder'));
