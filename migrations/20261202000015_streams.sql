-- Kafka streams: a model scoring the records of a topic, run by every instance that has a broker
-- configured (they share the topic's partitions as one consumer group).
--
-- Each partition's next offset to store is kept here and moved in the same transaction as the
-- predictions of the records before it: a record seen again (after a crash, before the consumer
-- group's offsets were committed, or after a rebalance) is below it, recognised, and not stored
-- twice.

create table stream (
    id bigserial primary key,
    model_id bigint not null references model (id) on delete cascade,
    -- Which version answers, moved like any alias: the next batch of records after a promotion
    -- uses the new version.
    alias text not null default 'production',
    input_topic text not null,
    output_topic text not null,
    dead_letter_topic text not null,
    group_id text not null,
    state text not null default 'running' check (state in ('running', 'paused')),
    records bigint not null default 0,
    dead_letters bigint not null default 0,
    -- Records behind, as the instance consuming last measured it.
    lag bigint,
    lag_at timestamptz,
    created_by bigint references app_user (id) on delete set null,
    created_at timestamptz not null default now(),
    unique (model_id, input_topic)
);

create table stream_partition (
    stream_id bigint not null references stream (id) on delete cascade,
    partition integer not null,
    next_offset bigint not null,
    primary key (stream_id, partition)
);
