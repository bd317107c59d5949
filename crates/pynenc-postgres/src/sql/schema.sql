-- The pynenc PostgreSQL schema (version 8; see the crate documentation).
-- Status codes are those of pynenc_store::codes: 0 SCHEDULED, 1 REGISTERED,
-- 4 REROUTED, 5 PENDING, 7 RUNNING, 8 PAUSED, 9 RESUMED, 12 RETRY,
-- 13 SUCCESS, 14 FAILED ...
-- Every text column has the collation "C": ids, task names and keys
-- compare byte by byte whatever the database's own collation.
CREATE TABLE pynenc_meta (
    key TEXT COLLATE "C" PRIMARY KEY,
    value TEXT COLLATE "C" NOT NULL
);
CREATE TABLE pynenc_apps (
    app SERIAL PRIMARY KEY,
    app_id TEXT COLLATE "C" NOT NULL UNIQUE
);
CREATE TABLE pynenc_invocations (
    app INTEGER NOT NULL,
    invocation_id TEXT COLLATE "C" NOT NULL,
    task TEXT COLLATE "C" NOT NULL,
    status SMALLINT NOT NULL,
    owner TEXT COLLATE "C",
    status_at_us BIGINT NOT NULL,
    created_at_us BIGINT NOT NULL,
    due_at_us BIGINT NOT NULL,
    registration_key TEXT COLLATE "C",
    running_key TEXT COLLATE "C",
    retries INTEGER NOT NULL DEFAULT 0,
    waited BOOLEAN NOT NULL DEFAULT FALSE,
    final_at_us BIGINT,
    parent TEXT COLLATE "C",
    call_id TEXT COLLATE "C" NOT NULL,
    error_kind TEXT COLLATE "C",
    cancel_owner TEXT COLLATE "C",
    cancel_error TEXT COLLATE "C",
    -- the outcome: the result, and the error (JSON) a failure or a retry
    -- left (a success after a retry keeps it)
    result TEXT COLLATE "C",
    error TEXT COLLATE "C",
    -- the status history: one line per entry, in the order written, each
    -- a JSON array [status code, owner, actor, timestamp µs, execution
    -- context] (appended by the status writes of the same step)
    history TEXT COLLATE "C" NOT NULL DEFAULT '',
    PRIMARY KEY (app, invocation_id)
);
CREATE INDEX pynenc_invocations_registration
    ON pynenc_invocations (app, registration_key, created_at_us)
    WHERE registration_key IS NOT NULL AND final_at_us IS NULL;
CREATE INDEX pynenc_invocations_success
    ON pynenc_invocations (app, registration_key, final_at_us)
    WHERE registration_key IS NOT NULL AND status = 13;
CREATE INDEX pynenc_invocations_running
    ON pynenc_invocations (app, running_key)
    WHERE running_key IS NOT NULL AND status IN (5, 7, 8, 9);
CREATE INDEX pynenc_invocations_scheduled
    ON pynenc_invocations (app, due_at_us)
    WHERE status = 0;
CREATE INDEX pynenc_invocations_final
    ON pynenc_invocations (app, status, final_at_us)
    WHERE final_at_us IS NOT NULL;
CREATE INDEX pynenc_invocations_owned
    ON pynenc_invocations (app, status_at_us)
    WHERE status IN (5, 7, 8, 9);
CREATE INDEX pynenc_invocations_blocking
    ON pynenc_invocations (app, created_at_us)
    WHERE waited AND status IN (1, 4, 12);
-- the listings, in id (creation) order: per task and status, and children.
-- The invocations in a runner's hands (PENDING, RUNNING, PAUSED, RESUMED:
-- those of pynenc_invocations_owned) are left out of the task index, so
-- that the status writes of a run add no entry to it: a listing by task
-- finds them through pynenc_invocations_owned. Keep the list in step
-- with IN_HANDS in queries.rs.
CREATE INDEX pynenc_invocations_task
    ON pynenc_invocations (app, task, status, invocation_id)
    WHERE status NOT IN (5, 7, 8, 9);
CREATE INDEX pynenc_invocations_parent
    ON pynenc_invocations (app, parent, invocation_id)
    WHERE parent IS NOT NULL;
CREATE INDEX pynenc_invocations_cancel
    ON pynenc_invocations (app, cancel_owner)
    WHERE cancel_owner IS NOT NULL;
CREATE TABLE pynenc_records (
    app INTEGER NOT NULL,
    invocation_id TEXT COLLATE "C" NOT NULL,
    record TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (app, invocation_id)
);
-- the calls registration concurrency folded into an invocation
-- (pynenc_model::reuse): seq numbers them per invocation from 1, so the
-- total is MAX(seq); only the latest REUSES_KEPT rows are kept, and they
-- go with their invocation
CREATE TABLE pynenc_reuses (
    app INTEGER NOT NULL,
    invocation_id TEXT COLLATE "C" NOT NULL,
    seq BIGINT NOT NULL,
    note TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (app, invocation_id, seq)
);
-- the data of workflow invocations (StoreTxn::put_workflow_data): a text
-- value per key, set by the workflow or recorded on its first run; they
-- go with their invocation
CREATE TABLE pynenc_workflow_data (
    app INTEGER NOT NULL,
    invocation_id TEXT COLLATE "C" NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    value TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (app, invocation_id, key)
);
CREATE TABLE pynenc_status_counts (
    app INTEGER NOT NULL,
    task TEXT COLLATE "C" NOT NULL,
    status SMALLINT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (app, task, status)
);
-- the task totals (pynenc_model::totals): monotonic counters per task,
-- one row per TotalKey code (0-5 counters, 9 run-time sum, 10+ run-time
-- buckets); kept when invocations are deleted, forgotten by the app purge
CREATE TABLE pynenc_task_totals (
    app INTEGER NOT NULL,
    task TEXT COLLATE "C" NOT NULL,
    counter SMALLINT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (app, task, counter)
);
CREATE TABLE pynenc_failed_counts (
    app INTEGER NOT NULL,
    task TEXT COLLATE "C" NOT NULL,
    kind TEXT COLLATE "C" NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (app, task, kind)
);
-- who waits on whom; external waiters are not recorded
CREATE TABLE pynenc_waits (
    app INTEGER NOT NULL,
    waited TEXT COLLATE "C" NOT NULL,
    waiter TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (app, waited, waiter)
);
CREATE INDEX pynenc_waits_waiter ON pynenc_waits (app, waiter);
CREATE SEQUENCE pynenc_queue_seq;
CREATE TABLE pynenc_queue (
    app INTEGER NOT NULL,
    seq BIGINT NOT NULL,
    invocation_id TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (app, seq)
);
CREATE TABLE pynenc_controlled (
    seq BIGSERIAL PRIMARY KEY,
    app INTEGER NOT NULL,
    running_key TEXT COLLATE "C" NOT NULL,
    invocation_id TEXT COLLATE "C" NOT NULL
);
CREATE INDEX pynenc_controlled_key ON pynenc_controlled (app, running_key, seq);
CREATE TABLE pynenc_edges (
    seq BIGSERIAL PRIMARY KEY,
    app INTEGER NOT NULL,
    caller_invocation_id TEXT COLLATE "C" NOT NULL,
    caller_call_id TEXT COLLATE "C" NOT NULL,
    callee_call_id TEXT COLLATE "C" NOT NULL
);
CREATE INDEX pynenc_edges_call ON pynenc_edges (app, caller_call_id, callee_call_id);
CREATE INDEX pynenc_edges_invocation ON pynenc_edges (app, caller_invocation_id);
CREATE TABLE pynenc_heartbeats (
    app INTEGER NOT NULL,
    runner_id TEXT COLLATE "C" NOT NULL,
    beat_us BIGINT NOT NULL,
    PRIMARY KEY (app, runner_id)
);
CREATE TABLE pynenc_runners (
    app INTEGER NOT NULL,
    runner_id TEXT COLLATE "C" NOT NULL,
    kind TEXT COLLATE "C" NOT NULL,
    host TEXT COLLATE "C" NOT NULL,
    pid BIGINT NOT NULL,
    started_us BIGINT NOT NULL,
    slots BIGINT NOT NULL,
    running TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (app, runner_id)
);
CREATE TABLE pynenc_triggers (
    app INTEGER NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    record TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (app, name)
);
CREATE TABLE pynenc_leases (
    app INTEGER NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    holder TEXT COLLATE "C" NOT NULL,
    expires_us BIGINT NOT NULL,
    PRIMARY KEY (app, name)
);
-- the data store: values by content digest (SHA-256, 32 bytes) with their
-- length and claim time (when last put or claimed: the sweep's order), and
-- the invocations that refer to each
CREATE TABLE pynenc_data (
    app INTEGER NOT NULL,
    digest BYTEA NOT NULL CHECK (octet_length(digest) = 32),
    length BIGINT NOT NULL,
    value TEXT COLLATE "C" NOT NULL,
    claimed_us BIGINT NOT NULL,
    PRIMARY KEY (app, digest)
);
CREATE INDEX pynenc_data_claimed ON pynenc_data (app, claimed_us, digest);
CREATE TABLE pynenc_data_refs (
    app INTEGER NOT NULL,
    digest BYTEA NOT NULL,
    invocation_id TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (app, digest, invocation_id)
);
-- the listener connections of the app's stores, by server process id: a
-- group notifies the app's channel only when a listener of another store
-- is registered (written under the app's lock; rows of ended processes
-- are removed when a listener registers)
CREATE TABLE pynenc_listeners (
    app INTEGER NOT NULL,
    pid INTEGER NOT NULL,
    since_us BIGINT NOT NULL,
    PRIMARY KEY (app, pid)
);
-- the last commit number of each writer (process and store) written by a
-- group that sent BEGIN and COMMIT in one round trip: what settles it when
-- the connection is lost before any answer
CREATE TABLE pynenc_commits (
    app INTEGER NOT NULL,
    writer BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    at_us BIGINT NOT NULL,
    PRIMARY KEY (app, writer)
);
