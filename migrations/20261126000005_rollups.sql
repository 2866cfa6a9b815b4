-- Per-minute rollups of the prediction log, maintained by a statement-level trigger as rows
-- arrive (one trigger run per batched insert), so the dashboard reads thousands of rollup rows
-- instead of millions of predictions. And the failures the dashboard's error rate counts.

create table prediction_rollup (
    version_id bigint not null references model_version (id) on delete cascade,
    model_id bigint not null references model (id) on delete cascade,
    source text not null,
    bucket timestamptz not null,
    n bigint not null,
    latency_sum_us bigint not null,
    -- Counts per latency bucket; upper bounds in microseconds:
    -- 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000, 200000, 500000, 1000000, +inf
    latency_hist bigint[] not null,
    primary key (version_id, source, bucket)
);

create index prediction_rollup_model_idx on prediction_rollup (model_id, bucket);

create function prediction_rollup_add() returns trigger language plpgsql as $$
begin
    insert into prediction_rollup as r (version_id, model_id, source, bucket, n, latency_sum_us, latency_hist)
    select version_id, model_id, source, date_trunc('minute', created_at), count(*), sum(latency_us),
           array[
               count(*) filter (where latency_us <= 50),
               count(*) filter (where latency_us > 50 and latency_us <= 100),
               count(*) filter (where latency_us > 100 and latency_us <= 200),
               count(*) filter (where latency_us > 200 and latency_us <= 500),
               count(*) filter (where latency_us > 500 and latency_us <= 1000),
               count(*) filter (where latency_us > 1000 and latency_us <= 2000),
               count(*) filter (where latency_us > 2000 and latency_us <= 5000),
               count(*) filter (where latency_us > 5000 and latency_us <= 10000),
               count(*) filter (where latency_us > 10000 and latency_us <= 20000),
               count(*) filter (where latency_us > 20000 and latency_us <= 50000),
               count(*) filter (where latency_us > 50000 and latency_us <= 100000),
               count(*) filter (where latency_us > 100000 and latency_us <= 200000),
               count(*) filter (where latency_us > 200000 and latency_us <= 500000),
               count(*) filter (where latency_us > 500000 and latency_us <= 1000000),
               count(*) filter (where latency_us > 1000000)
           ]
    from new_rows
    group by 1, 2, 3, 4
    on conflict (version_id, source, bucket) do update
        set n = r.n + excluded.n,
            latency_sum_us = r.latency_sum_us + excluded.latency_sum_us,
            latency_hist = (select array_agg(a + b order by i)
                            from unnest(r.latency_hist, excluded.latency_hist) with ordinality as t(a, b, i));
    return null;
end
$$;

create trigger prediction_rollup_add after insert on prediction
    referencing new table as new_rows
    for each statement execute function prediction_rollup_add();

-- Predictions that failed: bad input, a model error, or nowhere to store them.
create table prediction_failure (
    id bigint generated always as identity primary key,
    model_id bigint not null references model (id) on delete cascade,
    version_id bigint not null references model_version (id) on delete cascade,
    source text not null,
    reason text not null,
    created_at timestamptz not null default now()
);

create index prediction_failure_model_idx on prediction_failure (model_id, created_at);
