-- Deletes every row of the app whose number is given (the caller
-- substitutes it: an integer it read itself).
DELETE FROM pynenc_records WHERE app = $APP;
DELETE FROM pynenc_reuses WHERE app = $APP;
DELETE FROM pynenc_workflow_data WHERE app = $APP;
DELETE FROM pynenc_waits WHERE app = $APP;
DELETE FROM pynenc_invocations WHERE app = $APP;
DELETE FROM pynenc_status_counts WHERE app = $APP;
DELETE FROM pynenc_failed_counts WHERE app = $APP;
DELETE FROM pynenc_task_totals WHERE app = $APP;
DELETE FROM pynenc_queue WHERE app = $APP;
DELETE FROM pynenc_controlled WHERE app = $APP;
DELETE FROM pynenc_edges WHERE app = $APP;
DELETE FROM pynenc_heartbeats WHERE app = $APP;
DELETE FROM pynenc_runners WHERE app = $APP;
DELETE FROM pynenc_triggers WHERE app = $APP;
DELETE FROM pynenc_leases WHERE app = $APP;
DELETE FROM pynenc_data_refs WHERE app = $APP;
DELETE FROM pynenc_data WHERE app = $APP;
