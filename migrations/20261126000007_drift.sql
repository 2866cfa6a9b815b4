-- Reference profiles of training inputs, and drift checks of live inputs against them.

alter table model_version add column reference_profile jsonb;

create table drift_run (
    id bigint generated always as identity primary key,
    model_id bigint not null references model (id) on delete cascade,
    version_id bigint not null references model_version (id) on delete cascade,
    window_label text not null,
    rows integer not null,
    features integer not null,
    drifted_features integer not null,
    -- Null when the window held too few predictions for a verdict.
    drifted boolean,
    created_at timestamptz not null default now()
);

create index drift_run_version_idx on drift_run (version_id, created_at desc);

create table drift_feature (
    run_id bigint not null references drift_run (id) on delete cascade,
    feature text not null,
    method text not null,
    statistic double precision not null,
    p_value double precision,
    threshold double precision not null,
    drifted boolean not null,
    psi double precision not null,
    -- Bin edges with the reference's and the window's shares, for the histograms.
    histogram jsonb not null,
    primary key (run_id, feature)
);
