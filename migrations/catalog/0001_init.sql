-- The catalog: the global directory of regions, shards, orgs, identities and installations.
-- Small and hot; every region reads it (a read replica in production).

create table region (
    name       text primary key,
    api_url    text not null,
    created_at timestamptz not null default now()
);

create table shard (
    name       text primary key,
    region     text not null references region (name),
    dsn        text not null,
    created_at timestamptz not null default now()
);

-- Half-open org-id ranges [range_start, range_end), each owned by one shard. The exclusion
-- constraint makes overlapping ranges impossible, whatever writes them.
create table shard_range (
    range_start bigint primary key,
    range_end   bigint not null,
    shard       text not null references shard (name),
    -- The next org id this range hands out; range_end when it is full.
    next_id     bigint not null,
    -- Whether new orgs may be placed in this range.
    open        boolean not null default true,
    created_at  timestamptz not null default now(),
    check (range_start > 0),
    check (range_start < range_end),
    check (next_id between range_start and range_end),
    constraint shard_range_no_overlap exclude using gist (int8range(range_start, range_end) with &&)
);
create index shard_range_shard on shard_range (shard);

-- Bumped by every change to shards or ranges, so services notice a new map cheaply.
create table shard_map_version (
    singleton boolean primary key default true check (singleton),
    version   bigint not null
);
insert into shard_map_version (version) values (1);

create function bump_shard_map_version() returns trigger language plpgsql as $$
begin
    update shard_map_version set version = version + 1;
    return null;
end $$;
create trigger shard_changed after insert or update or delete on shard
    for each statement execute function bump_shard_map_version();
-- Allocating an id moves next_id only; that is not a change of the map.
create trigger shard_range_changed after insert or delete or update of range_start, range_end, shard on shard_range
    for each statement execute function bump_shard_map_version();

create table org (
    id         bigint primary key,
    slug       text not null unique,
    name       text not null,
    region     text not null references region (name),
    plan       text not null,
    -- 'creating' while onboarding runs: never visible to the API.
    status     text not null default 'creating' check (status in ('creating', 'active', 'deleted')),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    deleted_at timestamptz
);

create table app_user (
    id         text primary key,
    email      text not null unique,
    created_at timestamptz not null default now()
);

create table membership (
    org_id     bigint not null references org (id) on delete cascade,
    user_id    text not null references app_user (id),
    role       text not null check (role in ('owner', 'admin', 'billing', 'developer', 'viewer')),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    primary key (org_id, user_id)
);
create index membership_user on membership (user_id);

-- API keys: the secret is shown once; only its SHA-256 is kept, found by its prefix.
create table api_key (
    id           text primary key,
    org_id       bigint not null references org (id) on delete cascade,
    -- The member the key was issued to; null for an org's service keys.
    user_id      text references app_user (id),
    name         text not null,
    role         text not null check (role in ('owner', 'admin', 'billing', 'developer', 'viewer')),
    prefix       text not null unique,
    secret_hash  bytea not null,
    created_at   timestamptz not null default now(),
    revoked_at   timestamptz,
    last_used_at timestamptz
);
create index api_key_org on api_key (org_id);

-- GitHub App installations and the org that claimed each (one org per installation).
create table installation (
    installation_id bigint primary key,
    org_id          bigint not null references org (id),
    account_login   text,
    account_type    text,
    status          text not null default 'active' check (status in ('active', 'suspended', 'deleted')),
    repositories    jsonb not null default '[]',
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now()
);
create index installation_org on installation (org_id);

-- Deliveries for installations no org has claimed: recorded, counted, never run.
create table unclaimed_delivery (
    delivery_id     text primary key,
    installation_id bigint,
    event           text not null,
    action          text,
    received_in     text not null,
    received_at     timestamptz not null,
    recorded_at     timestamptz not null default now()
);
create index unclaimed_delivery_installation on unclaimed_delivery (installation_id, received_at desc);

-- Idempotency keys of creating requests that are not scoped to one org (POST /v1/orgs).
create table idempotency_key (
    scope        text not null,
    key          text not null,
    request_hash bytea not null,
    status       smallint,
    body         jsonb,
    created_at   timestamptz not null default now(),
    primary key (scope, key)
);
