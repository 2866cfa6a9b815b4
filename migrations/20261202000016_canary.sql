-- Canary: a share of the traffic that asks for a model's `production` alias is answered by a
-- candidate version instead. One policy per model; removing it sends everything to production
-- again. The prediction log keeps which version answered each row (`version_id`), so the arms'
-- figures are SQL over it since `started_at`.

create table traffic_policy (
    model_id bigint primary key references model (id) on delete cascade,
    candidate_version_id bigint not null references model_version (id) on delete cascade,
    -- The candidate's share of the callers, strictly between 0 and 1.
    share double precision not null check (share > 0 and share < 1),
    started_at timestamptz not null default now(),
    updated_by bigint references app_user (id) on delete set null
);

-- Every instance's resolution cache forgets what it knew when a policy changes, as it does when
-- an alias moves.
create trigger traffic_policy_notify
    after insert or update or delete or truncate on traffic_policy
    for each statement execute function plinth_notify('plinth_registry');
