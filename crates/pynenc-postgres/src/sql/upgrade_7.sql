-- Upgrades a version 7 schema to version 8: the task index leaves out the
-- invocations in a runner's hands (see schema.sql). Run in one transaction
-- under the schema lock; the index is built again from the table.
DROP INDEX pynenc_invocations_task;
CREATE INDEX pynenc_invocations_task
    ON pynenc_invocations (app, task, status, invocation_id)
    WHERE status NOT IN (5, 7, 8, 9);
UPDATE pynenc_meta SET value = '8' WHERE key = 'schema_version';
