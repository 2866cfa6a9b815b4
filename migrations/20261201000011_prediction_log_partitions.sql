-- The prediction log at scale.
--
-- 1. `prediction` and `prediction_failure` are range-partitioned by UTC day, so retention drops
--    whole partitions instead of deleting rows. Each has a default partition that catches a row
--    whose day has no partition yet (a clock far off, a test seeding last month); Plinth's
--    maintenance job moves such rows into their day's partition when it creates it.
-- 2. A `prediction` row holds every prediction of one request (up to 1,024): ids `id` to
--    `id + n - 1`, the inputs as `float8[]` (n rows of the card's features) and the outputs as
--    typed arrays (labels, values, n rows of class probabilities in the card's label order),
--    with `jsonb` arrays only where the shape is not known (text inputs, rows from before).
--    Ids come from a sequence that steps by 1,024, so each call hands its caller a block of
--    ids, and a request's ids are consecutive.
-- 3. Feedback, rollups and drift runs outlive the raw rows: feedback carries what it needs, and
--    no foreign key ties it to a partition that retention may drop.

create function plinth_partition_name(parent text, day date) returns text
language sql immutable as $$
    select parent || '_p' || to_char(day, 'YYYYMMDD')
$$;

-- Makes sure `parent` has a partition for the UTC day `day`; rows of that day waiting in the
-- default partition move into it. True when it created the partition.
create function plinth_partition_day(parent text, day date) returns boolean
language plpgsql as $$
declare
    part text := plinth_partition_name(parent, day);
    lo timestamptz := day::timestamp at time zone 'UTC';
    hi timestamptz := (day + 1)::timestamp at time zone 'UTC';
    waiting boolean;
begin
    if to_regclass(part) is not null then
        return false;
    end if;
    execute format('select exists (select 1 from %I where created_at >= %L and created_at < %L)',
                   parent || '_default', lo, hi)
        into waiting;
    if not waiting then
        execute format('create table %I partition of %I for values from (%L) to (%L)',
                       part, parent, lo, hi);
    else
        execute format('create table %I (like %I including defaults including constraints)', part, parent);
        execute format('with moved as (delete from %I where created_at >= %L and created_at < %L returning *)
                        insert into %I select * from moved',
                       parent || '_default', lo, hi, part);
        execute format('alter table %I attach partition %I for values from (%L) to (%L)',
                       parent, part, lo, hi);
    end if;
    return true;
end
$$;

-- The days `parent` has partitions for, oldest first (from the partitions' names).
create function plinth_partition_days(parent text) returns setof date
language sql stable as $$
    select to_date(right(c.relname, 8), 'YYYYMMDD')
    from pg_inherits i
    join pg_class c on c.oid = i.inhrelid
    where i.inhparent = parent::regclass
      and c.relname ~ ('^' || parent || '_p[0-9]{8}$')
    order by 1
$$;

-- Every day with rows in the default partition gets its partition (and its rows).
create function plinth_partition_waiting(parent text) returns integer
language plpgsql as $$
declare
    d date;
    made integer := 0;
begin
    for d in execute format('select distinct (created_at at time zone ''UTC'')::date from %I order by 1',
                            parent || '_default')
    loop
        if plinth_partition_day(parent, d) then
            made := made + 1;
        end if;
    end loop;
    return made;
end
$$;


-- The new prediction log.

alter table prediction rename to prediction_unpartitioned;
alter table feedback drop constraint if exists feedback_prediction_id_fkey;
drop trigger if exists prediction_rollup_add on prediction_unpartitioned;

create sequence prediction_id_block increment by 1024 minvalue 1 start with 1;

create table prediction (
    id bigint not null default nextval('prediction_id_block'),
    n integer not null default 1 check (n between 1 and 1024),
    model_id bigint not null,
    version_id bigint not null,
    user_id bigint,
    token_id bigint,
    latency_us integer not null,
    created_at timestamptz not null default now(),
    source text not null,
    -- n rows of the card's features, row after row; or, when not all numbers, `inputs`.
    x float8[],
    inputs jsonb check (jsonb_typeof(inputs) = 'array'),
    -- One label and one value per row; n rows of probabilities in the card's label order.
    label text[],
    value float8[],
    proba float8[],
    -- Outputs of any other shape: one object per row.
    outputs jsonb check (jsonb_typeof(outputs) = 'array'),
    check (x is null or cardinality(x) % n = 0),
    check (proba is null or cardinality(proba) % n = 0)
) partition by range (created_at);

alter sequence prediction_id_block owned by prediction.id;

create table prediction_default partition of prediction default;

-- A prediction by id; "my predictions"; a version's recent predictions (model pages, drift).
create index prediction_id_idx on prediction (id);
create index prediction_user_idx on prediction (user_id, created_at desc) where user_id is not null;
create index prediction_version_idx on prediction (version_id, created_at desc);

insert into prediction (id, n, model_id, version_id, user_id, token_id, latency_us, created_at, source, inputs, outputs)
select id, 1, model_id, version_id, user_id, token_id, latency_us, created_at, source,
       jsonb_build_array(inputs), jsonb_build_array(outputs)
from prediction_unpartitioned;

select setval('prediction_id_block', greatest((select max(id) from prediction_unpartitioned), 1));

drop table prediction_unpartitioned;

select plinth_partition_waiting('prediction');
select plinth_partition_day('prediction', (now() at time zone 'UTC')::date + d)
from generate_series(0, 2) d;

-- Rollups count every prediction a row holds.
create or replace function prediction_rollup_add() returns trigger language plpgsql as $$
begin
    insert into prediction_rollup as r (version_id, model_id, source, bucket, shard, n, latency_sum_us, latency_hist)
    select version_id, model_id, source, date_trunc('minute', created_at), pg_backend_pid() % 8,
           sum(n), sum(latency_us::bigint * n),
           array[
               coalesce(sum(n) filter (where latency_us <= 50), 0),
               coalesce(sum(n) filter (where latency_us > 50 and latency_us <= 100), 0),
               coalesce(sum(n) filter (where latency_us > 100 and latency_us <= 200), 0),
               coalesce(sum(n) filter (where latency_us > 200 and latency_us <= 500), 0),
               coalesce(sum(n) filter (where latency_us > 500 and latency_us <= 1000), 0),
               coalesce(sum(n) filter (where latency_us > 1000 and latency_us <= 2000), 0),
               coalesce(sum(n) filter (where latency_us > 2000 and latency_us <= 5000), 0),
               coalesce(sum(n) filter (where latency_us > 5000 and latency_us <= 10000), 0),
               coalesce(sum(n) filter (where latency_us > 10000 and latency_us <= 20000), 0),
               coalesce(sum(n) filter (where latency_us > 20000 and latency_us <= 50000), 0),
               coalesce(sum(n) filter (where latency_us > 50000 and latency_us <= 100000), 0),
               coalesce(sum(n) filter (where latency_us > 100000 and latency_us <= 200000), 0),
               coalesce(sum(n) filter (where latency_us > 200000 and latency_us <= 500000), 0),
               coalesce(sum(n) filter (where latency_us > 500000 and latency_us <= 1000000), 0),
               coalesce(sum(n) filter (where latency_us > 1000000), 0)
           ]::bigint[]
    from new_rows
    group by 1, 2, 3, 4, 5
    on conflict (version_id, source, bucket, shard) do update
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


-- Failed predictions, partitioned the same way.

alter table prediction_failure rename to prediction_failure_unpartitioned;

create sequence prediction_failure_id;

create table prediction_failure (
    id bigint not null default nextval('prediction_failure_id'),
    model_id bigint not null,
    version_id bigint not null,
    source text not null,
    reason text not null,
    created_at timestamptz not null default now()
) partition by range (created_at);

alter sequence prediction_failure_id owned by prediction_failure.id;

create table prediction_failure_default partition of prediction_failure default;
create index prediction_failure_model_time_idx on prediction_failure (model_id, created_at);

insert into prediction_failure (id, model_id, version_id, source, reason, created_at)
select id, model_id, version_id, source, reason, created_at from prediction_failure_unpartitioned;
select setval('prediction_failure_id', greatest((select max(id) from prediction_failure_unpartitioned), 1));
drop table prediction_failure_unpartitioned;

select plinth_partition_waiting('prediction_failure');
select plinth_partition_day('prediction_failure', (now() at time zone 'UTC')::date + d)
from generate_series(0, 2) d;


-- What the maintenance job last did, for the history pages ("older predictions are gone").

create table prediction_log_state (
    only_row boolean primary key default true check (only_row),
    -- Predictions made before this were dropped by retention; null while nothing was.
    retained_from timestamptz,
    retention_days integer,
    last_run_at timestamptz,
    last_run_by text
);

insert into prediction_log_state default values;
