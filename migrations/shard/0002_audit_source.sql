-- Entries moved from the catalog's audit outbox carry their outbox id, so a move repeated
-- after a crash inserts nothing twice.
alter table audit_log add column source_id bigint;
create unique index audit_log_source on audit_log (org_id, source_id) where source_id is not null;
