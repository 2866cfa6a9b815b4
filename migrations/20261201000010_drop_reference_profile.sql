-- The reference profile computed at upload was never read: drift checks work from the
-- version's reference.csv. Dropped rather than kept in step with the checks by hand.

alter table model_version drop column if exists reference_profile;
