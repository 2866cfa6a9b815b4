-- Batch jobs that add each feature's contribution (its SHAP value) to their results: the
-- explained features, in the results' column order; null for a job that adds none.
alter table batch_job add column contributions jsonb;
