-- Data versions: data sets as registry entries, the model versions that used them, and
-- comparisons of two model versions over their reference rows.

create table dataset (
    id bigint generated always as identity primary key,
    name text not null unique,
    description text not null default '',
    created_at timestamptz not null default now(),
    created_by bigint references app_user (id) on delete set null
);

-- One file of a data set. The same file (by SHA-256) added to a data set again is the version
-- it already is.
create table dataset_version (
    id bigint generated always as identity primary key,
    dataset_id bigint not null references dataset (id) on delete cascade,
    version integer not null check (version > 0),
    sha256 text not null,
    size_bytes bigint not null check (size_bytes >= 0),
    row_count bigint not null check (row_count >= 0),
    format text not null check (format in ('csv', 'parquet')),
    -- `[{"name", "kind": "number" | "text"}]`, in the file's order.
    schema jsonb not null check (jsonb_typeof(schema) = 'array'),
    -- Per column: counts, missing, moments, quantiles, a histogram or the top categories.
    profile jsonb not null,
    -- A column whose values name the rows (unique in the file), when the file has one.
    key_column text,
    -- `artifact` (the file is in the artifact store under `sha256`) or `url`.
    location_kind text not null check (location_kind in ('artifact', 'url')),
    location text not null,
    created_at timestamptz not null default now(),
    created_by bigint references app_user (id) on delete set null,
    unique (dataset_id, version),
    unique (dataset_id, sha256)
);

-- Which data sets a model version was trained and evaluated on.
create table model_version_dataset (
    version_id bigint not null references model_version (id) on delete cascade,
    dataset_version_id bigint not null references dataset_version (id) on delete cascade,
    role text not null check (role in ('training', 'evaluation')),
    created_at timestamptz not null default now(),
    primary key (version_id, role, dataset_version_id)
);

create index model_version_dataset_dataset_idx on model_version_dataset (dataset_version_id);

-- Two versions of a model run over both versions' reference rows, as a job: a worker of any
-- instance claims it under a lease it renews; one whose lease ran out is claimed again and
-- started over. The figures are kept in `result` when it is done.
create table version_comparison (
    id bigint generated always as identity primary key,
    model_id bigint not null references model (id) on delete cascade,
    a_version_id bigint not null references model_version (id) on delete cascade,
    b_version_id bigint not null references model_version (id) on delete cascade,
    state text not null default 'queued'
        check (state in ('queued', 'running', 'done', 'failed')),
    total_rows bigint not null default 0 check (total_rows >= 0),
    rows_done bigint not null default 0 check (rows_done >= 0),
    result jsonb,
    message text,
    leased_by text,
    lease_until timestamptz,
    attempts integer not null default 0,
    created_by bigint references app_user (id) on delete set null,
    created_at timestamptz not null default now(),
    started_at timestamptz,
    finished_at timestamptz
);

create index version_comparison_pair_idx
    on version_comparison (a_version_id, b_version_id, id desc);
create index version_comparison_open_idx
    on version_comparison (id) where state in ('queued', 'running');
