-- The model registry and the prediction log.

create table model (
    id bigint generated always as identity primary key,
    name text not null unique,
    created_at timestamptz not null default now(),
    created_by bigint references app_user (id) on delete set null
);

create table model_version (
    id bigint generated always as identity primary key,
    model_id bigint not null references model (id) on delete cascade,
    version integer not null,
    sha256 text not null,
    size_bytes bigint not null,
    card jsonb not null,
    signature jsonb not null,
    metadata jsonb not null default '{}',
    reference_sha256 text,
    reference_rows integer,
    source text not null,
    created_at timestamptz not null default now(),
    created_by bigint references app_user (id) on delete set null,
    unique (model_id, version),
    unique (model_id, sha256)
);

create table model_alias (
    model_id bigint not null references model (id) on delete cascade,
    alias text not null,
    version_id bigint not null references model_version (id) on delete cascade,
    updated_at timestamptz not null default now(),
    updated_by bigint references app_user (id) on delete set null,
    primary key (model_id, alias)
);

-- Every alias move: who, when, from which version to which.
create table alias_event (
    id bigint generated always as identity primary key,
    model_id bigint not null references model (id) on delete cascade,
    alias text not null,
    from_version_id bigint references model_version (id) on delete set null,
    to_version_id bigint not null references model_version (id) on delete cascade,
    actor_id bigint references app_user (id) on delete set null,
    created_at timestamptz not null default now()
);

create index alias_event_model_idx on alias_event (model_id, created_at desc);

-- One row per prediction, written before the result is shown or returned.
create table prediction (
    id bigint generated always as identity primary key,
    model_id bigint not null references model (id) on delete cascade,
    version_id bigint not null references model_version (id) on delete cascade,
    user_id bigint references app_user (id) on delete set null,
    token_id bigint,
    source text not null,
    inputs jsonb not null,
    outputs jsonb not null,
    latency_us integer not null,
    created_at timestamptz not null default now()
);

-- "My recent predictions", "this model's last hour", and retention by time.
create index prediction_user_recent_idx on prediction (user_id, created_at desc, id desc);
create index prediction_model_recent_idx on prediction (model_id, created_at desc);
create index prediction_created_brin on prediction using brin (created_at);
