-- The pynenc SQLite schema (version 2; see the crate documentation).
CREATE TABLE IF NOT EXISTS pynenc_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS apps (
    app INTEGER PRIMARY KEY,
    app_id TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS names (
    name_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS invocations (
    rid INTEGER PRIMARY KEY,
    app INTEGER NOT NULL,
    invocation_id TEXT NOT NULL,
    status INTEGER NOT NULL,
    owner TEXT,
    status_at_us INTEGER NOT NULL,
    created_at_us INTEGER NOT NULL,
    due_at_us INTEGER NOT NULL,
    registration_key TEXT,
    running_key TEXT,
    retries INTEGER NOT NULL DEFAULT 0,
    waited INTEGER NOT NULL DEFAULT 0,
    final_at_us INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS invocations_id ON invocations (app, invocation_id);
CREATE INDEX IF NOT EXISTS invocations_registration
    ON invocations (app, registration_key, created_at_us)
    WHERE registration_key IS NOT NULL AND status = 1;
CREATE INDEX IF NOT EXISTS invocations_running
    ON invocations (app, running_key)
    WHERE running_key IS NOT NULL AND status IN (5, 7, 8, 9);
CREATE INDEX IF NOT EXISTS invocations_scheduled
    ON invocations (app, due_at_us)
    WHERE status = 0;
CREATE INDEX IF NOT EXISTS invocations_final
    ON invocations (app, final_at_us)
    WHERE final_at_us IS NOT NULL;
CREATE INDEX IF NOT EXISTS invocations_owned
    ON invocations (app, status_at_us)
    WHERE status IN (5, 7, 8, 9);
CREATE INDEX IF NOT EXISTS invocations_blocking
    ON invocations (app, created_at_us)
    WHERE waited = 1 AND status IN (1, 4, 12);
CREATE TABLE IF NOT EXISTS records (
    rid INTEGER PRIMARY KEY,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outcomes (
    rid INTEGER PRIMARY KEY,
    result TEXT,
    error TEXT
);
CREATE TABLE IF NOT EXISTS history (
    seq INTEGER PRIMARY KEY,
    rid INTEGER NOT NULL,
    status INTEGER NOT NULL,
    owner INTEGER,
    actor INTEGER NOT NULL,
    timestamp_us INTEGER NOT NULL,
    execution_context INTEGER
);
CREATE INDEX IF NOT EXISTS history_rid ON history (rid);
CREATE TABLE IF NOT EXISTS queue (
    app INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    invocation_id TEXT NOT NULL,
    PRIMARY KEY (app, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS controlled (
    seq INTEGER PRIMARY KEY,
    app INTEGER NOT NULL,
    running_key TEXT NOT NULL,
    invocation_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS controlled_key ON controlled (app, running_key);
CREATE TABLE IF NOT EXISTS edges (
    seq INTEGER PRIMARY KEY,
    app INTEGER NOT NULL,
    caller_invocation_id TEXT NOT NULL,
    caller_call_id TEXT NOT NULL,
    callee_call_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS edges_call ON edges (app, caller_call_id, callee_call_id);
CREATE INDEX IF NOT EXISTS edges_invocation ON edges (app, caller_invocation_id);
CREATE TABLE IF NOT EXISTS heartbeats (
    app INTEGER NOT NULL,
    runner_id TEXT NOT NULL,
    beat_us INTEGER NOT NULL,
    PRIMARY KEY (app, runner_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (
    app INTEGER NOT NULL,
    name TEXT NOT NULL,
    holder TEXT NOT NULL,
    expires_us INTEGER NOT NULL,
    PRIMARY KEY (app, name)
) WITHOUT ROWID;
