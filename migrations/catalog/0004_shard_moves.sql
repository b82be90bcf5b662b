-- Online range moves: an org-id range [range_start, range_end) copied from one shard to
-- another of the same region while it keeps serving, then switched over (docs/sharding.md).
create table shard_move (
    id           text primary key,
    range_start  bigint not null,
    range_end    bigint not null,
    from_shard   text not null references shard (name),
    to_shard     text not null references shard (name),
    -- pending → copying → catching_up → paused → verifying → done
    --                                                     ↘ rolled_back | failed
    phase        text not null default 'pending'
        check (phase in ('pending', 'copying', 'catching_up', 'paused', 'verifying',
                         'done', 'rolled_back', 'failed')),
    rows_total   bigint not null default 0,
    rows_copied  bigint not null default 0,
    -- Captured writes not yet applied to the target.
    lag_rows     bigint not null default 0,
    -- How long writes to the range were held, in milliseconds.
    pause_ms     bigint,
    verification jsonb,
    error        text,
    -- Whether the source shard's copy of the range has been dropped by the operator.
    source_dropped boolean not null default false,
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now(),
    finished_at  timestamptz,
    check (range_start < range_end),
    check (from_shard <> to_shard)
);
-- At most one unfinished move per range at a time.
create index shard_move_active on shard_move (range_start, range_end)
    where phase not in ('done', 'rolled_back', 'failed');
