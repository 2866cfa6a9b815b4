-- The audit log: who did what, when, from where.

create table audit_event (
    id bigint generated always as identity primary key,
    actor_id bigint references app_user (id) on delete set null,
    -- The actor's username at the time (for failed logins: the name that was tried).
    actor text,
    action text not null,
    target text,
    detail jsonb not null default '{}',
    client_ip text,
    created_at timestamptz not null default now()
);

create index audit_event_recent_idx on audit_event (created_at desc, id desc);
create index audit_event_action_idx on audit_event (action, created_at desc);
create index audit_event_actor_idx on audit_event (actor_id, created_at desc);
