-- Control planes from before 0008 meter a delivery by a `usage_event` row (`delivery:<id>`),
-- inserted after its `delivery` row in the same transaction, and add it to the rollup when that
-- row is new. Since 0008 deleted those rows and new control planes write none, an old recorder
-- would find the row new for every delivery it records again (a redelivered record message, a
-- delivery redelivered from GitHub) and count the delivery a second time: during a rolling
-- upgrade, while old and new pods run side by side, and after a rollback.
--
-- So such a row is let in only for the delivery that the same transaction has just inserted:
-- an old recorder's first record of it, which it then counts once, as the new recorder would.
-- For a delivery recorded before (by any version), the insert is skipped, the old recorder sees
-- nothing new, and the rollup is left alone. Rows of other metrics are not touched. New control
-- planes never insert such rows; this trigger can go once no control plane before 0008 runs.
create function usage_event_delivery_once() returns trigger
language plpgsql as $$
begin
    if exists (
        select 1 from delivery d
        where d.org_id = new.org_id
          and d.delivery_id = substr(new.event_id, length('delivery:') + 1)
          and d.xmin <> pg_current_xact_id()::xid
    ) then
        return null;
    end if;
    return new;
end
$$;

create trigger usage_event_delivery_once
    before insert on usage_event
    for each row
    when (new.metric = 'webhook_deliveries' and new.event_id like 'delivery:%')
    execute function usage_event_delivery_once();
