-- API tokens and feedback on predictions.

create table api_token (
    id bigint generated always as identity primary key,
    user_id bigint not null references app_user (id) on delete cascade,
    name text not null,
    -- The first characters of the secret, shown so a token can be recognised.
    prefix text not null,
    -- SHA-256 of the secret; the secret itself is shown once and never stored.
    token_hash text not null unique,
    created_at timestamptz not null default now(),
    last_used_at timestamptz,
    revoked_at timestamptz
);

create index api_token_user_idx on api_token (user_id, created_at desc);

alter table prediction
    add constraint prediction_token_fk foreign key (token_id) references api_token (id) on delete set null;

-- The true label or value of a prediction, arriving later; one per prediction.
create table feedback (
    prediction_id bigint primary key references prediction (id) on delete cascade,
    label text,
    value double precision,
    user_id bigint references app_user (id) on delete set null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    check (label is not null or value is not null)
);
