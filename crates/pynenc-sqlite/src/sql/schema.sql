-- The pynenc SQLite schema (version 7; see the crate documentation).
-- The partial indexes name their statuses as comparisons joined by OR,
-- never `status IN (...)`: SQLite evaluates a list of more than two
-- constants through a temporary b-tree that it builds anew for every
-- statement that writes a row (an index's condition is checked for the
-- old and the new row), and a query uses such an index only when its WHERE
-- has the same condition, written the same way (see `codes.rs`).
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
-- task and error_kind are names.name_id; call_hash is the 32 bytes of the
-- call id's argument hash; cancel_owner is the runner asked to stop the
-- invocation, cancel_error (JSON) the error naming who asked.
CREATE TABLE IF NOT EXISTS invocations (
    rid INTEGER PRIMARY KEY,
    app INTEGER NOT NULL,
    invocation_id TEXT NOT NULL,
    task INTEGER NOT NULL,
    status INTEGER NOT NULL,
    owner TEXT,
    status_at_us INTEGER NOT NULL,
    created_at_us INTEGER NOT NULL,
    due_at_us INTEGER NOT NULL,
    registration_key TEXT,
    running_key TEXT,
    retries INTEGER NOT NULL DEFAULT 0,
    waited INTEGER NOT NULL DEFAULT 0,
    final_at_us INTEGER,
    parent TEXT,
    call_hash BLOB NOT NULL,
    error_kind INTEGER,
    cancel_owner TEXT,
    cancel_error TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS invocations_id ON invocations (app, invocation_id);
-- registration concurrency: the invocations of a key that are not final
CREATE INDEX IF NOT EXISTS invocations_registration
    ON invocations (app, registration_key, created_at_us)
    WHERE registration_key IS NOT NULL AND final_at_us IS NULL;
CREATE INDEX IF NOT EXISTS invocations_success
    ON invocations (app, registration_key, final_at_us)
    WHERE registration_key IS NOT NULL AND status = 13;
CREATE INDEX IF NOT EXISTS invocations_running
    ON invocations (app, running_key)
    WHERE running_key IS NOT NULL AND (status = 5 OR status = 7 OR status = 8 OR status = 9);
CREATE INDEX IF NOT EXISTS invocations_scheduled
    ON invocations (app, due_at_us)
    WHERE status = 0;
CREATE INDEX IF NOT EXISTS invocations_final
    ON invocations (app, status, final_at_us)
    WHERE final_at_us IS NOT NULL;
CREATE INDEX IF NOT EXISTS invocations_owned
    ON invocations (app, status_at_us)
    WHERE (status = 5 OR status = 7 OR status = 8 OR status = 9);
CREATE INDEX IF NOT EXISTS invocations_blocking
    ON invocations (app, created_at_us)
    WHERE waited = 1 AND (status = 1 OR status = 4 OR status = 12);
-- the listings, each in id (creation) order: per task the invocations not
-- final yet, and per task and final status the final ones
CREATE INDEX IF NOT EXISTS invocations_open
    ON invocations (app, task, invocation_id)
    WHERE final_at_us IS NULL;
CREATE INDEX IF NOT EXISTS invocations_ended
    ON invocations (app, task, status, invocation_id)
    WHERE final_at_us IS NOT NULL;
CREATE INDEX IF NOT EXISTS invocations_parent
    ON invocations (app, parent, invocation_id)
    WHERE parent IS NOT NULL;
CREATE INDEX IF NOT EXISTS invocations_cancel
    ON invocations (app, cancel_owner)
    WHERE cancel_owner IS NOT NULL;
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
-- the data of workflows (invocations.rid), key -> value
CREATE TABLE IF NOT EXISTS workflow_data (
    rid INTEGER NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (rid, key)
) WITHOUT ROWID;
-- the calls registration concurrency folded into an invocation, numbered
-- from 1 per invocation (the latest kept; the largest number is the total)
CREATE TABLE IF NOT EXISTS reuses (
    rid INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    note TEXT NOT NULL,
    PRIMARY KEY (rid, seq)
) WITHOUT ROWID;
-- how many invocations of a task are in a status, and how many FAILED ones
-- failed with an error kind (names.name_id), kept by the primitives
CREATE TABLE IF NOT EXISTS status_counts (
    app INTEGER NOT NULL,
    task INTEGER NOT NULL,
    status INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (app, task, status)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS failed_counts (
    app INTEGER NOT NULL,
    task INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (app, task, kind)
) WITHOUT ROWID;
-- what was routed, started and ended per task, and run times (codes of
-- pynenc_model::TotalKey); kept when invocations are deleted
CREATE TABLE IF NOT EXISTS task_totals (
    app INTEGER NOT NULL,
    task INTEGER NOT NULL,
    counter INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (app, task, counter)
) WITHOUT ROWID;
-- who waits on whom (invocations.rid); external waiters are not recorded
CREATE TABLE IF NOT EXISTS waits (
    waited INTEGER NOT NULL,
    waiter INTEGER NOT NULL,
    PRIMARY KEY (waited, waiter)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS waits_waiter ON waits (waiter);
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
-- what each runner said of itself (its heartbeat is in heartbeats)
CREATE TABLE IF NOT EXISTS runners (
    app INTEGER NOT NULL,
    runner_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_us INTEGER NOT NULL,
    slots INTEGER NOT NULL,
    running TEXT NOT NULL,
    PRIMARY KEY (app, runner_id)
) WITHOUT ROWID;
-- the triggers runners declared (a JSON TriggerRecord per name)
CREATE TABLE IF NOT EXISTS triggers (
    app INTEGER NOT NULL,
    name TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (app, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (
    app INTEGER NOT NULL,
    name TEXT NOT NULL,
    holder TEXT NOT NULL,
    expires_us INTEGER NOT NULL,
    PRIMARY KEY (app, name)
) WITHOUT ROWID;
-- the data store: a large value stored once per content digest (the 64 hex
-- digits of its SHA-256) and app, its length in bytes and when it was last
-- put or claimed; the sweep reads data_values_claim, oldest claim first
CREATE TABLE IF NOT EXISTS data_values (
    dv INTEGER PRIMARY KEY,
    app INTEGER NOT NULL,
    digest TEXT NOT NULL,
    len INTEGER NOT NULL,
    claimed_at_us INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS data_values_digest ON data_values (app, digest);
CREATE INDEX IF NOT EXISTS data_values_claim ON data_values (app, claimed_at_us);
-- the text of each value (data_values.dv), apart so that a claim never
-- rewrites it
CREATE TABLE IF NOT EXISTS data_texts (
    dv INTEGER PRIMARY KEY,
    value TEXT NOT NULL
);
-- the invocations that refer to each value: a set
CREATE TABLE IF NOT EXISTS data_references (
    dv INTEGER NOT NULL,
    invocation_id TEXT NOT NULL,
    PRIMARY KEY (dv, invocation_id)
) WITHOUT ROWID;
