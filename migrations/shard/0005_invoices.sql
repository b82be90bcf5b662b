-- Finalized invoices, one per org and calendar month (UTC). Drafts are not stored: while a
-- period is open its invoice is computed from the usage rollup on every read. Closing a period
-- writes each org's invoice once (numbered); afterwards it never changes.
create table invoice (
    org_id         bigint not null,
    period         text not null check (period ~ '^[0-9]{4}-(0[1-9]|1[0-2])$'),
    number         text not null unique,
    plan           text not null,
    currency       text not null,
    lines          jsonb not null,
    subtotal_minor bigint not null,
    total_minor    bigint not null,
    finalized_at   timestamptz not null default now(),
    primary key (org_id, period)
);

create function invoice_is_final() returns trigger language plpgsql as $$
begin
    raise exception 'invoice % of org % is finalized and cannot be changed', old.number, old.org_id
        using errcode = 'integrity_constraint_violation';
end
$$;

create trigger invoice_is_final before update or delete on invoice
    for each row execute function invoice_is_final();
