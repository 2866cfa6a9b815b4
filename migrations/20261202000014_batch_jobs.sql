-- Batch scoring jobs: a file of rows in, a file of predictions out.
--
-- A submitted file is split into chunks of whole records, kept here until scored (the input
-- file itself is not kept). Workers on any instance claim a chunk (`for update skip locked`),
-- hold it under a lease they renew while scoring, and commit in one transaction: the chunk's
-- results, its state, its bad rows, the job's counters and the predictions themselves (in the
-- prediction log, source `batch`, up to 1,024 a row). A worker that dies leaves its chunk's
-- lease to run out; another worker claims the chunk again, and a commit by a worker whose lease
-- was taken over is refused, so no row is scored twice or lost.

create table batch_job (
    id bigserial primary key,
    model_id bigint not null references model (id) on delete cascade,
    -- The version named or aliased at submission: a job's rows all get the same version.
    version_id bigint not null references model_version (id) on delete cascade,
    user_id bigint references app_user (id) on delete set null,
    token_id bigint,
    state text not null default 'queued'
        check (state in ('queued', 'running', 'finishing', 'done', 'failed', 'cancelled')),
    -- The uploaded file's name, or the URL it was read from.
    input_name text not null,
    input_format text not null check (input_format in ('csv', 'parquet')),
    -- The input's columns, in order (feature columns matched by name, the rest passed through).
    columns jsonb not null check (jsonb_typeof(columns) = 'array'),
    -- The results are also written here when the job is done.
    output_url text,
    total_rows bigint not null check (total_rows >= 0),
    rows_done bigint not null default 0,
    rows_failed bigint not null default 0,
    -- The job stops once more rows than this were refused.
    max_errors bigint not null check (max_errors >= 0),
    message text,
    -- While `finishing` (writing `output_url`): who does it, and until when.
    leased_by text,
    lease_until timestamptz,
    created_at timestamptz not null default now(),
    started_at timestamptz,
    finished_at timestamptz
);

create index batch_job_user_idx on batch_job (user_id, id desc);
create index batch_job_open_idx on batch_job (id) where state in ('queued', 'running', 'finishing');

create table batch_chunk (
    job_id bigint not null references batch_job (id) on delete cascade,
    seq integer not null,
    -- Where the chunk's first record starts: its line in a CSV file (the header is line 1), its
    -- row in a Parquet file (from 1).
    first_line bigint not null,
    rows integer not null check (rows > 0),
    -- The records as CSV without a header, in the job's columns; emptied once scored.
    input bytea,
    state text not null default 'pending' check (state in ('pending', 'running', 'done')),
    leased_by text,
    lease_until timestamptz,
    attempts integer not null default 0,
    -- The results as CSV without a header: the input's fields, then the outputs.
    output bytea,
    rows_failed integer not null default 0,
    primary key (job_id, seq)
);

create index batch_chunk_todo_idx on batch_chunk (job_id, seq) where state <> 'done';

-- Rows a job refused, with the reason the form would give.
create table batch_error (
    job_id bigint not null references batch_job (id) on delete cascade,
    line bigint not null,
    reason text not null,
    primary key (job_id, line)
);

-- Chunks are written once and read once or twice: stored as they are, without compression.
alter table batch_chunk
    alter column input set storage external,
    alter column output set storage external;

-- A prediction-log row of a batch chunk or a stream batch holds up to 1,024 predictions: arrays
-- of 30 to 60 KB of floats, which pglz spent about 5 ms each trying (and failing) to compress,
-- a COPY of a chunk's eight rows taking 50 ms instead of 8. Stored out of line, uncompressed.
-- (Partitions made from now on inherit this; one made from rows waiting in the default
-- partition copies it too.)
alter table prediction
    alter column x set storage external,
    alter column proba set storage external,
    alter column value set storage external,
    alter column label set storage external;

create or replace function plinth_partition_day(parent text, day date) returns boolean
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
        execute format('create table %I (like %I including defaults including constraints including storage)', part, parent);
        execute format('with moved as (delete from %I where created_at >= %L and created_at < %L returning *)
                        insert into %I select * from moved',
                       parent || '_default', lo, hi, part);
        execute format('alter table %I attach partition %I for values from (%L) to (%L)',
                       parent, part, lo, hi);
    end if;
    return true;
end
$$;
