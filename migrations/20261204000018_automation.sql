-- Automation: guarded promotion and rollback rules per model, evaluated on a schedule by one
-- instance, and webhooks that tell people what happened.

-- At most one promotion rule and one rollback rule per model. A criterion left null is not
-- checked. `mode` 'act' moves the alias; 'notify' only records and alerts.
create table automation_rule (
    model_id bigint not null references model (id) on delete cascade,
    kind text not null check (kind in ('promote', 'rollback')),
    mode text not null default 'act' check (mode in ('act', 'notify')),
    -- promote: shadow or canary predictions the candidate must have answered;
    -- rollback: requests production must have had in the window.
    min_predictions integer not null check (min_predictions > 0),
    -- promote: share of the shadow's labels equal to production's (classifiers).
    min_agreement double precision check (min_agreement >= 0 and min_agreement <= 1),
    -- promote: mean |shadow - live| (regressors).
    max_mean_abs_difference double precision check (max_mean_abs_difference >= 0),
    -- promote: the candidate's model errors per attempt; rollback: production's, in the window.
    max_error_rate double precision check (max_error_rate >= 0 and max_error_rate <= 1),
    -- promote: live quality (accuracy in points for classifiers, MAE for regressors) worse than
    -- production's by at most this much, over the predictions with feedback.
    max_quality_drop double precision check (max_quality_drop >= 0),
    -- rollback: the window, and drift flagged on this many checks in a row.
    window_minutes integer check (window_minutes > 0),
    drift_checks integer check (drift_checks > 0),
    -- The last evaluation, for the page; and what last fired (cleared when the condition no
    -- longer holds), so that a condition that stays true alerts once.
    last_evaluated_at timestamptz,
    last_outcome text,
    last_figures jsonb,
    fired_key text,
    updated_by bigint references app_user (id) on delete set null,
    updated_at timestamptz not null default now(),
    primary key (model_id, kind)
);

-- Why an alias moved, when a rule moved it (null for a person's move).
alter table alias_event add column reason text;

-- Webhooks: global (model_id null) or per model; `events` empty means every event.
create table webhook (
    id bigint generated always as identity primary key,
    model_id bigint references model (id) on delete cascade,
    url text not null,
    events text[] not null default '{}',
    enabled boolean not null default true,
    created_by bigint references app_user (id) on delete set null,
    created_at timestamptz not null default now()
);

-- One event for one webhook: sent, retried with backoff, and kept with what came back.
create table webhook_delivery (
    id bigint generated always as identity primary key,
    webhook_id bigint not null references webhook (id) on delete cascade,
    event text not null,
    body jsonb not null,
    state text not null default 'pending' check (state in ('pending', 'delivered', 'failed')),
    attempts integer not null default 0,
    -- When it is due; while an instance is sending it, a lease (another takes it after).
    next_attempt_at timestamptz not null default now(),
    last_status integer,
    last_response text,
    last_error text,
    created_at timestamptz not null default now(),
    delivered_at timestamptz
);

create index webhook_delivery_due_idx on webhook_delivery (next_attempt_at) where state = 'pending';
create index webhook_delivery_webhook_idx on webhook_delivery (webhook_id, id desc);

-- Every attempt at a delivery, with the status and the start of the body received.
create table webhook_attempt (
    delivery_id bigint not null references webhook_delivery (id) on delete cascade,
    attempt integer not null,
    status integer,
    response text,
    error text,
    duration_ms integer not null,
    created_at timestamptz not null default now(),
    primary key (delivery_id, attempt)
);
