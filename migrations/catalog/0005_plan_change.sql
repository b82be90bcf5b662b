-- Every change of an org's plan, with its time: an invoice prorates its month between the
-- plans in force during it (docs/billing.md). A trigger writes the row, in the transaction
-- that changes `org.plan`, so whatever changes a plan (the API, an operator's SQL) leaves its
-- record, and no record describes a change that did not commit.
create table org_plan_change (
    id         bigserial primary key,
    org_id     bigint not null references org (id) on delete cascade,
    -- In force from this time on (the changing transaction's start).
    changed_at timestamptz not null,
    from_plan  text not null,
    to_plan    text not null
);
create index org_plan_change_org on org_plan_change (org_id, changed_at, id);
-- Closing a period reads the changes of every org since the period's start.
create index org_plan_change_at on org_plan_change (changed_at);

create function record_plan_change() returns trigger language plpgsql as $$
begin
    insert into org_plan_change (org_id, changed_at, from_plan, to_plan)
    values (new.id, now(), old.plan, new.plan);
    return null;
end $$;

create trigger org_plan_changed after update of plan on org
    for each row when (old.plan is distinct from new.plan)
    execute function record_plan_change();
