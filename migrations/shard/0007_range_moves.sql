-- The source side of an online range move (docs/sharding.md). While a fence exists for a
-- range, the triggers the mover installs on every org table record each changed row's key in
-- `range_change` (state `capturing`), make writers wait while the mover holds the move's
-- advisory lock (`paused`), and refuse writes once the range lives on another shard (`moved`,
-- SQLSTATE SY001: the writer re-reads the shard map and retries there).
create table range_fence (
    move_id     text primary key,
    range_start bigint not null,
    range_end   bigint not null,
    state       text not null check (state in ('capturing', 'paused', 'moved')),
    check (range_start < range_end)
);

create table range_change (
    seq     bigint generated always as identity primary key,
    move_id text not null,
    tbl     text not null,
    -- The changed row's primary key, as {column: value}.
    pk      jsonb not null
);
create index range_change_move on range_change (move_id, seq);

-- Trigger arguments: the table's primary-key columns.
create function range_fence_guard() returns trigger language plpgsql as $$
declare
    r      record;
    f      record;
    pk     jsonb := '{}';
    i      int;
begin
    if TG_OP = 'DELETE' then r := OLD; else r := NEW; end if;
    select move_id, state into f from range_fence
        where r.org_id >= range_start and r.org_id < range_end limit 1;
    if not found then
        return r;
    end if;
    if f.state = 'paused' then
        -- Held while the mover holds the lock; then look again.
        perform pg_advisory_xact_lock_shared(hashtextextended(f.move_id, 0));
        select move_id, state into f from range_fence where move_id = f.move_id;
        if not found then
            -- The move was rolled back while this writer waited: write as usual.
            return r;
        end if;
    end if;
    if f.state = 'moved' then
        raise exception 'org % has moved to another shard', r.org_id
            using errcode = 'SY001', hint = 'reload the shard map and retry';
    end if;
    for i in 0 .. TG_NARGS - 1 loop
        pk := pk || jsonb_build_object(TG_ARGV[i], to_jsonb(r) -> TG_ARGV[i]);
    end loop;
    insert into range_change (move_id, tbl, pk) values (f.move_id, TG_TABLE_NAME, pk);
    -- An UPDATE that changes the key also changes the old row.
    if TG_OP = 'UPDATE' then
        pk := '{}';
        for i in 0 .. TG_NARGS - 1 loop
            pk := pk || jsonb_build_object(TG_ARGV[i], to_jsonb(OLD) -> TG_ARGV[i]);
        end loop;
        insert into range_change (move_id, tbl, pk) values (f.move_id, TG_TABLE_NAME, pk);
    end if;
    return r;
end;
$$;
