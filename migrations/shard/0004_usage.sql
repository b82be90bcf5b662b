-- Metered usage. Every event is stored once: its id is idempotent (`job-seconds:<job>:<attempt>`,
-- `llm-tokens:<job>:<attempt>`, `delivery:<delivery id>`), so an event sent or ingested twice
-- counts once.
create table usage_event (
    org_id      bigint not null,
    event_id    text not null,
    metric      text not null check (metric in ('webhook_deliveries', 'job_seconds', 'llm_tokens')),
    quantity    bigint not null check (quantity >= 0),
    repo        text,
    job_id      text,
    at          timestamptz not null,
    ingested_at timestamptz not null default now(),
    primary key (org_id, event_id)
);
create index usage_event_org_at on usage_event (org_id, at);

-- The events summed per org, UTC day, metric and repository ('' for none). Recomputed from the
-- events for each (org, day) a write touches, in the same transaction, so it always equals the
-- sum of its events and re-running the rollup changes nothing.
create table usage_daily (
    org_id   bigint not null,
    day      date not null,
    metric   text not null,
    repo     text not null default '',
    quantity bigint not null,
    primary key (org_id, day, metric, repo)
);
