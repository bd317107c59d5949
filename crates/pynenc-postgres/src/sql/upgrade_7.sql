-- Upgrades a version 7 schema to version 8: the task index leaves out the
-- invocations in a runner's hands (see schema.sql). Run in one transaction
-- under the schema lock. The new index is built under another name first
-- (which only holds back writes), then the old one is dropped and the new
-- one renamed (the table is locked for those two steps alone); a lock not
-- had within lock_timeout fails the upgrade, which leaves version 7 as it
-- was.
SET LOCAL lock_timeout = '30s';
CREATE INDEX pynenc_invocations_task_v8
    ON pynenc_invocations (app, task, status, invocation_id)
    WHERE status NOT IN (5, 7, 8, 9);
DROP INDEX IF EXISTS pynenc_invocations_task;
ALTER INDEX pynenc_invocations_task_v8 RENAME TO pynenc_invocations_task;
UPDATE pynenc_meta SET value = '8' WHERE key = 'schema_version';
