-- The department's code, for the secretariat's scoping (null when upstream gives none).
alter table convocation add column department text;
