-- Feedback carries what was predicted, for which version and when, so live quality over a
-- window is an aggregate over feedback alone, not a join against millions of predictions.

alter table feedback
    add column version_id bigint references model_version (id) on delete cascade,
    add column predicted_at timestamptz,
    add column predicted_label text,
    add column predicted_value double precision;

update feedback f
set version_id = p.version_id,
    predicted_at = p.created_at,
    predicted_label = p.outputs->>'label',
    predicted_value = (p.outputs->>'value')::float8
from prediction p
where p.id = f.prediction_id;

create index feedback_version_time_idx on feedback (predicted_at, version_id);
