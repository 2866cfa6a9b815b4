-- Shadow versions: candidates that receive a copy of a model's live traffic off the request
-- path. Their answers are stored in the prediction log (source 'shadow', `shadow_of` the live
-- row's first id: row i of the shadow row answers row i of the live one) and never returned.

create table shadow_version (
    model_id bigint not null references model (id) on delete cascade,
    version_id bigint not null references model_version (id) on delete cascade,
    started_at timestamptz not null default now(),
    created_by bigint references app_user (id) on delete set null,
    primary key (model_id, version_id)
);

create trigger shadow_version_notify
    after insert or update or delete or truncate on shadow_version
    for each statement execute function plinth_notify('plinth_registry');

-- Null for every row but a shadow's; adding a nullable column rewrites nothing.
alter table prediction add column shadow_of bigint;

-- A shadow version's rows since it started, for the agreement figures.
create index prediction_shadow_idx on prediction (version_id, created_at) where shadow_of is not null;
