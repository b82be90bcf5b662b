-- A shard: the high-volume, org-scoped data of the orgs whose ids fall in its ranges.
-- Every table leads with org_id.

-- The org's presence on this shard (written by onboarding; moved with its range).
create table tenant (
    org_id     bigint primary key,
    slug       text not null,
    created_at timestamptz not null default now()
);

create table trigger_rule (
    org_id     bigint not null references tenant (org_id),
    id         text not null,
    position   int not null,
    event      text not null,
    action     text,
    label      text,
    command    text,
    repos      text[],
    kind       text not null,
    created_at timestamptz not null default now(),
    primary key (org_id, id)
);

create table delivery (
    org_id          bigint not null,
    delivery_id     text not null,
    event           text not null,
    action          text,
    installation_id bigint,
    repo            text,
    outcome         text not null,
    job_count       int not null default 0,
    received_in     text not null,
    received_at     timestamptz not null,
    recorded_at     timestamptz not null default now(),
    primary key (org_id, delivery_id)
);
create index delivery_org_received on delivery (org_id, received_at desc);

create table job (
    org_id      bigint not null,
    id          text not null,
    kind        text not null,
    delivery_id text not null,
    rule_id     text not null,
    repo        text,
    status      text not null check (status in
                  ('queued', 'running', 'succeeded', 'failed', 'dead', 'skipped_quota', 'cancelled')),
    attempts    int not null default 0,
    -- Number of job_event rows so far; the next event's seq is event_seq + 1.
    event_seq   int not null default 0,
    spec        jsonb not null,
    result      jsonb,
    error       text,
    worker      text,
    -- Stream sequence of the JetStream message the job runs from: tells a redelivery of the
    -- same message (take over) from a duplicate message (leave alone).
    stream_seq  bigint,
    created_at  timestamptz not null,
    started_at  timestamptz,
    finished_at timestamptz,
    updated_at  timestamptz not null default now(),
    primary key (org_id, id)
);
create index job_org_created on job (org_id, created_at desc, id desc);
create index job_org_status on job (org_id, status, created_at desc);

-- Every transition of every job: the audit trail the read models are built from.
create table job_event (
    org_id  bigint not null,
    job_id  text not null,
    seq     int not null,
    status  text not null,
    at      timestamptz not null default now(),
    worker  text,
    detail  jsonb,
    primary key (org_id, job_id, seq),
    foreign key (org_id, job_id) references job (org_id, id) on delete cascade
);

-- Every mutating admin action. Append-only: the database refuses to change or remove rows.
create table audit_log (
    org_id     bigint not null,
    id         bigint generated always as identity,
    at         timestamptz not null default now(),
    actor      text not null,
    action     text not null,
    target     text,
    details    jsonb not null default '{}',
    request_id text,
    primary key (org_id, id)
);
create index audit_log_org_at on audit_log (org_id, at desc, id desc);

create function audit_log_is_append_only() returns trigger language plpgsql as $$
begin
    raise exception 'audit_log is append-only' using errcode = 'insufficient_privilege';
end $$;
create trigger audit_log_no_update before update or delete on audit_log
    for each row execute function audit_log_is_append_only();
create trigger audit_log_no_truncate before truncate on audit_log
    for each statement execute function audit_log_is_append_only();

-- Idempotency keys of creating requests scoped to an org.
create table org_idempotency_key (
    org_id       bigint not null,
    scope        text not null,
    key          text not null,
    request_hash bytea not null,
    status       smallint,
    body         jsonb,
    created_at   timestamptz not null default now(),
    primary key (org_id, scope, key)
);
