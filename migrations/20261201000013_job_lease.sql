-- Scheduled jobs run once per interval across all instances: every instance ticks, and the one
-- whose tick finds the job due claims it by moving `last_run_at` (a row lock decides between
-- instances ticking at once). When that instance dies mid-run, the job is due again one interval
-- after its claim, and another instance runs it.

create table job_lease (
    name text primary key,
    last_run_at timestamptz,
    run_by text
);
