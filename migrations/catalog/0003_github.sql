-- Which repositories an installation reaches: every one of the account's ('all') or those
-- listed in `repositories` ('selected').
alter table installation add column repository_selection text not null default 'selected'
    check (repository_selection in ('all', 'selected'));

-- Redeliveries the reconciler asked GitHub for: bounded per delivery, and visible.
create table github_redelivery (
    guid         text not null,
    delivery_id  bigint not null,
    event        text not null,
    status_code  int not null,
    requested_at timestamptz not null default now(),
    result       text not null,
    primary key (guid, delivery_id)
);
create index github_redelivery_requested on github_redelivery (requested_at desc);
