-- Every change to an org's memberships or API keys bumps the org's authz_version. Control
-- planes compare it on each request with the version of the authorization rules they hold
-- for the org and reload those rules when it moved, so a membership change takes effect on
-- the next request on every instance.
alter table org add column authz_version bigint not null default 1;

create function bump_org_authz_version() returns trigger language plpgsql as $$
begin
    if tg_op in ('UPDATE', 'DELETE') then
        update org set authz_version = authz_version + 1 where id = old.org_id;
    end if;
    if tg_op in ('INSERT', 'UPDATE') and (tg_op = 'INSERT' or new.org_id <> old.org_id) then
        update org set authz_version = authz_version + 1 where id = new.org_id;
    end if;
    return null;
end $$;

create trigger membership_changed after insert or update or delete on membership
    for each row execute function bump_org_authz_version();
create trigger api_key_changed after insert or delete or update of role, revoked_at, user_id, org_id on api_key
    for each row execute function bump_org_authz_version();

-- Audit entries of changes made in the catalog (memberships, keys, installations, the org
-- itself), written in the same transaction as the change and then moved to the org's shard,
-- where the audit log lives. Nothing is audited that did not happen, and nothing happens
-- unaudited.
create table audit_outbox (
    id         bigint generated always as identity primary key,
    org_id     bigint not null,
    at         timestamptz not null default now(),
    actor      text not null,
    action     text not null,
    target     text,
    details    jsonb not null default '{}',
    request_id text
);
create index audit_outbox_org on audit_outbox (org_id, id);
