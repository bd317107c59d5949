//! Held writes sent as few statements as their tables allow.
//!
//! Every statement of a pipeline is answered on its own, and each answer
//! wakes the writer's thread: a group's held writes — the rows, the
//! counters, the totals, the queue — were five to ten answers before its
//! `COMMIT`. They go instead as one statement, the first writes as
//! data-modifying `WITH` queries of the last, each with its own parameters
//! (`$1`, the app, is shared). A statement does not see its own changes,
//! so two writes of one table never share one: the second write of a
//! table goes in the next statement, in the order the writes were taken.

use std::fmt::Write as _;
use std::future::Future;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use crate::one_row::one_row;
use crate::pending::{Param, Write};
use crate::statements::Conn;

/// How many tables the held writes name (see [`Write::table`]).
const TABLES: usize = 8;

/// The held writes in statements: each holds at most one write of each
/// table; a table's writes go in successive statements, in their order.
pub(crate) fn stages(writes: Vec<Write>) -> Vec<Vec<Write>> {
    let mut stages: Vec<Vec<Write>> = Vec::new();
    let mut seen = [0usize; TABLES];
    for w in writes {
        let table = usize::from(w.table()).min(TABLES - 1);
        let k = seen[table];
        seen[table] += 1;
        if stages.len() <= k {
            stages.push(Vec::new());
        }
        stages[k].push(w);
    }
    stages
}

/// The statement running `parts`: the one of a write alone, else one
/// built for them (each part in its one-row form when it has one row).
pub(crate) fn prepared(
    conn: &Conn,
    parts: &[Write],
) -> std::result::Result<Statement, tokio_postgres::Error> {
    match parts {
        [one] => conn.prepared_for(one.sql(), one.len()),
        _ => {
            // the parts and their forms name the text: built once
            let key: Vec<(&'static str, bool)> =
                parts.iter().map(|w| (w.sql(), w.len() == 1)).collect();
            conn.prepared_built(key, |key| {
                let forms: Vec<(&str, usize)> = key
                    .iter()
                    .map(|&(sql, one)| (sql, if one { 1 } else { usize::MAX }))
                    .collect();
                text(&forms)
            })
        }
    }
}

/// Sends the statement of `parts` (polled with the others: one round trip).
pub(crate) fn send<'c>(
    client: &'c Client,
    stmt: &'c Statement,
    app: i32,
    parts: &'c [Write],
) -> impl Future<Output = std::result::Result<u64, tokio_postgres::Error>> + 'c {
    let arrays: Vec<Param<'c>> = parts.iter().flat_map(Write::arrays).collect();
    async move {
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(arrays.len() + 1);
        params.push(&app);
        params.extend(arrays.iter().map(|a| a.as_ref() as &(dyn ToSql + Sync)));
        client.execute(stmt, &params).await
    }
}

/// The text of one statement running `parts` (each a write's statement
/// and its number of rows), in order.
fn text(parts: &[(&str, usize)]) -> String {
    let mut offset = 0;
    let mut texts: Vec<String> = parts
        .iter()
        .map(|&(sql, rows)| {
            let sql = if rows == 1 {
                one_row(sql)
            } else {
                sql.to_string()
            };
            let (moved, highest) = renumber(&sql, offset);
            offset += highest.saturating_sub(1);
            moved
        })
        .collect();
    let last = texts.pop().unwrap_or_default();
    let mut out = String::new();
    for (i, t) in texts.iter().enumerate() {
        out.push_str(if i == 0 { "WITH " } else { ", " });
        let _ = write!(out, "w{i} AS ({t})");
    }
    if !out.is_empty() {
        out.push(' ');
    }
    out.push_str(&last);
    out
}

/// `sql` with every parameter after the first (`$2` on) moved up by
/// `offset`, and the highest parameter number it had.
fn renumber(sql: &str, offset: usize) -> (String, usize) {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut highest = 0;
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        match after[..digits].parse::<usize>() {
            Ok(n) => {
                highest = highest.max(n);
                let moved = if n == 1 { n } else { n + offset };
                let _ = write!(out, "${moved}");
            }
            Err(_) => out.push('$'),
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    (out, highest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("id{i}")).collect()
    }

    #[test]
    fn parameters_after_the_app_move_up() {
        assert_eq!(
            renumber("SELECT $1, $2::text[], $10::int[], '$x'", 4),
            ("SELECT $1, $6::text[], $14::int[], '$x'".to_string(), 10)
        );
    }

    #[test]
    fn a_table_written_twice_goes_in_the_next_statement() {
        let writes = vec![
            Write::Unwaited(ids(2)),
            Write::Enqueued(ids(1)),
            Write::WaitsReleased(ids(2)),
            Write::ErrorKinds(vec![]),
            Write::EdgesRemoved(ids(1)),
            Write::EdgesAdded(vec![]),
        ];
        let stages = stages(writes);
        let tables: Vec<Vec<u8>> = stages
            .iter()
            .map(|s| s.iter().map(Write::table).collect())
            .collect();
        assert_eq!(tables, vec![vec![0, 5, 6, 4], vec![0, 4]]);
        assert!(matches!(stages[1][0], Write::ErrorKinds(_)));
    }

    #[test]
    fn the_first_parts_become_with_queries_of_the_last() {
        let parts = [
            (Write::Unwaited(ids(2)).sql(), 2),
            (Write::Enqueued(ids(1)).sql(), 1),
        ];
        let sql = text(&parts);
        assert!(
            sql.starts_with("WITH w0 AS (UPDATE pynenc_invocations"),
            "{sql}"
        );
        assert!(sql.contains("UNNEST($2::text[])"), "{sql}");
        // the queue's append has one row: its one-row form, its array third
        assert!(sql.contains(") INSERT INTO pynenc_queue"), "{sql}");
        assert!(sql.contains("($3::text[])[1]"), "{sql}");
    }

    /// Every held write of the invocations table, combined with one write
    /// of every other table, in both forms, is a statement the server
    /// accepts on the library's schema (on a server the test starts;
    /// skipped with a message when the server binaries are missing).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_combination_the_writer_makes_prepares() {
        use crate::pending::statements as s;
        let Some(db) = pynenc_testservers::postgres::test_database() else {
            return;
        };
        let client = crate::pending::client_on_schema(&db.url(), "combined").await;
        for rows in [1, 2] {
            for first in [
                s::INSERTS,
                s::STATUS,
                s::EXTRAS,
                s::ERROR_KINDS,
                s::UNWAITED,
            ] {
                for edges in [s::EDGES_REMOVED, s::EDGES_ADDED] {
                    let parts: Vec<(&str, usize)> = [
                        first,
                        s::STATUS_COUNTS,
                        s::FAILED_COUNTS,
                        s::RECORDS,
                        s::TOTALS,
                        edges,
                        s::ENQUEUED,
                        s::WAITS_RELEASED,
                    ]
                    .into_iter()
                    .map(|sql| (sql, rows))
                    .collect();
                    let sql = text(&parts);
                    if let Err(e) = client.prepare(&sql).await {
                        panic!("{sql}: {e}");
                    }
                }
            }
        }
    }
}
