//! The query primitives of the SQLite store on real files: listings and
//! their pages (`listings`), counts (`counts`), waits, cancel requests,
//! runners, registration scopes, the ends to purge (`primitives`), and the
//! query plans and timings (`plans`).

mod counts;
mod listings;
mod plans;
mod primitives;

use std::path::Path;
use std::sync::Arc;

use pynenc_model::{
    Arguments, Call, ConcurrencySpec, Cursor, InvocationId, InvocationQuery, InvocationRecord,
    InvocationStatus, InvocationSummary, Order, RunnerId, Serializer, StatusRecord, Timestamp,
};
use pynenc_store::{Result, StoreTxn};

use crate::{SqliteOptions, SqliteStore};

/// The first creation time of the test invocations, in microseconds.
pub(super) const T0: i64 = 1_700_000_000_000_000;

pub(super) fn open(path: &Path, app_id: &str) -> Arc<SqliteStore> {
    SqliteStore::open(&SqliteOptions::new(path), app_id).unwrap()
}

pub(super) fn fresh() -> (tempfile::TempDir, Arc<SqliteStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("q.db"), "app");
    (dir, store)
}

pub(super) fn ts(us: i64) -> Timestamp {
    Timestamp::from_micros(us)
}

/// The time-ordered id of the `n`th test invocation (created at `created(n)`).
pub(super) fn id_at(n: u64) -> InvocationId {
    let us = u128::try_from(created(n).as_micros()).unwrap();
    InvocationId::from_u128((us << 72) | u128::from(n))
}

pub(super) fn created(n: u64) -> Timestamp {
    ts(T0 + i64::try_from(n).unwrap() * 10)
}

pub(super) fn st(status: InvocationStatus, owner: Option<&str>) -> StatusRecord {
    StatusRecord {
        status,
        owner: owner.map(RunnerId::from),
    }
}

pub(super) fn r(name: &str) -> RunnerId {
    RunnerId::from(name)
}

/// The record of the `n`th invocation, of `task` with argument `k` = `k`.
pub(super) fn rec(
    n: u64,
    task: &str,
    k: i64,
    parent: Option<InvocationId>,
) -> Arc<InvocationRecord> {
    keyed(n, task, k, parent, None)
}

pub(super) fn keyed(
    n: u64,
    task: &str,
    k: i64,
    parent: Option<InvocationId>,
    registration_key: Option<&str>,
) -> Arc<InvocationRecord> {
    let arguments = Arguments::new()
        .with(Serializer::Json, "k", &k)
        .unwrap()
        .with(Serializer::Json, "n", &n)
        .unwrap();
    Arc::new(InvocationRecord {
        invocation_id: id_at(n),
        call: Call::new(task, arguments),
        parent_invocation_id: parent,
        created_at: created(n),
        scheduled_at: None,
        concurrency: ConcurrencySpec {
            registration_key: registration_key.map(str::to_string),
            ..ConcurrencySpec::default()
        },
        rerun_of: None,
    })
}

/// Every invocation, oldest first, read in pages of 7.
pub(super) fn everything(t: &mut dyn StoreTxn) -> Result<Vec<InvocationSummary>> {
    let mut all = Vec::new();
    let mut q = InvocationQuery {
        order: Order::OldestFirst,
        limit: 7,
        ..InvocationQuery::new()
    };
    loop {
        let page = t.list_invocations(&q)?;
        let Some(last) = page.last() else {
            return Ok(all);
        };
        q.after = Some(Cursor(last.invocation_id));
        all.extend(page);
    }
}

/// What `query` must answer, worked out from every invocation.
pub(super) fn expected(
    all: &[InvocationSummary],
    query: &InvocationQuery,
) -> Vec<InvocationSummary> {
    let mut out: Vec<InvocationSummary> = all
        .iter()
        .filter(|s| query.matches(s) && query.is_after_cursor(&s.invocation_id))
        .cloned()
        .collect();
    if query.order == Order::NewestFirst {
        out.reverse();
    }
    out.truncate(query.limit);
    out
}
