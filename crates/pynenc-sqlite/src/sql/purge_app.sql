-- Deletes every row of an app (?1), children first.
DELETE FROM records WHERE rid IN (SELECT rid FROM invocations WHERE app = ?1);
DELETE FROM outcomes WHERE rid IN (SELECT rid FROM invocations WHERE app = ?1);
DELETE FROM history WHERE rid IN (SELECT rid FROM invocations WHERE app = ?1);
DELETE FROM waits WHERE waited IN (SELECT rid FROM invocations WHERE app = ?1);
DELETE FROM waits WHERE waiter IN (SELECT rid FROM invocations WHERE app = ?1);
DELETE FROM invocations WHERE app = ?1;
DELETE FROM status_counts WHERE app = ?1;
DELETE FROM failed_counts WHERE app = ?1;
DELETE FROM queue WHERE app = ?1;
DELETE FROM controlled WHERE app = ?1;
DELETE FROM edges WHERE app = ?1;
DELETE FROM heartbeats WHERE app = ?1;
DELETE FROM runners WHERE app = ?1;
DELETE FROM leases WHERE app = ?1;
DELETE FROM data_references WHERE dv IN (SELECT dv FROM data_values WHERE app = ?1);
DELETE FROM data_texts WHERE dv IN (SELECT dv FROM data_values WHERE app = ?1);
DELETE FROM data_values WHERE app = ?1;
