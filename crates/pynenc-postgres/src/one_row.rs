//! The one-row form of a statement over arrays.
//!
//! The steps read and write lists of invocations with statements over
//! arrays (`UNNEST($2::text[], …) AS u(id, …)`). A prepared statement runs
//! with a generic plan, which cannot know how long the arrays are: the
//! planner guesses ten rows and, on a table whose statistics are young or
//! small, joins them by hashing every row of the app (a few hundred
//! microseconds on a table of a few thousand rows, tens of milliseconds on
//! a large table never analyzed). A group of one invocation — the common
//! case when calls come one at a time — therefore runs the same statements
//! in a form that says there is one row: `(SELECT ($2::text[])[1], …) AS
//! u(id, …)`, which the planner turns into a lookup by primary key whatever
//! its statistics.

/// `sql` with each `UNNEST(<arrays>) [WITH ORDINALITY] [AS alias(columns)]`
/// replaced by a one-row subquery taking the first element of each array
/// (and `1` for the ordinality). Text without `UNNEST(` is returned as is.
pub(crate) fn one_row(sql: &str) -> String {
    const UNNEST: &str = "UNNEST(";
    let mut out = String::with_capacity(sql.len() + 64);
    let mut rest = sql;
    while let Some(at) = rest.find(UNNEST) {
        out.push_str(&rest[..at]);
        let after = &rest[at + UNNEST.len()..];
        let Some(close) = closing_paren(after) else {
            // not a call this rewrite understands: leave the rest untouched
            out.push_str(&rest[at..]);
            return out;
        };
        let arrays = split_top_level(&after[..close]);
        let mut tail = &after[close + 1..];
        let mut columns: Vec<String> = arrays
            .iter()
            .map(|a| format!("({})[1]", a.trim()))
            .collect();
        const ORDINALITY: &str = " WITH ORDINALITY";
        if let Some(t) = tail.strip_prefix(ORDINALITY) {
            columns.push("1::bigint".to_string());
            tail = t;
        }
        out.push_str("(SELECT ");
        out.push_str(&columns.join(", "));
        out.push(')');
        // a subquery in FROM needs an alias where the function had none
        if !tail.trim_start().starts_with("AS ") {
            out.push_str(" AS one_row");
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// The index of the parenthesis closing the one opened just before `s`.
fn closing_paren(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => return Some(i),
            ')' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// `s` split at the commas outside parentheses and brackets.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::one_row;

    #[test]
    fn a_join_over_arrays_becomes_one_row() {
        assert_eq!(
            one_row(
                "UPDATE t AS i SET s = u.s FROM UNNEST($2::text[], $3::smallint[]) AS u(id, s) \
                 WHERE i.app = $1 AND i.id = u.id"
            ),
            "UPDATE t AS i SET s = u.s FROM (SELECT ($2::text[])[1], ($3::smallint[])[1]) \
             AS u(id, s) WHERE i.app = $1 AND i.id = u.id"
        );
    }

    #[test]
    fn ordinality_is_one_and_a_missing_alias_is_added() {
        assert_eq!(
            one_row("SELECT u.id FROM UNNEST($2::text[]) WITH ORDINALITY AS u(id, n) ORDER BY u.n"),
            "SELECT u.id FROM (SELECT ($2::text[])[1], 1::bigint) AS u(id, n) ORDER BY u.n"
        );
        assert_eq!(
            one_row("INSERT INTO t SELECT $1, * FROM UNNEST($2::text[], $3::text[]) ON CONFLICT DO NOTHING"),
            "INSERT INTO t SELECT $1, * FROM (SELECT ($2::text[])[1], ($3::text[])[1]) AS one_row \
             ON CONFLICT DO NOTHING"
        );
    }

    #[test]
    fn every_call_is_rewritten_and_other_text_kept() {
        let sql = "SELECT 1 FROM UNNEST($2::text[]) AS a(x), UNNEST($3::text[]) AS b(y)";
        assert_eq!(
            one_row(sql),
            "SELECT 1 FROM (SELECT ($2::text[])[1]) AS a(x), (SELECT ($3::text[])[1]) AS b(y)"
        );
        assert_eq!(one_row("SELECT 1"), "SELECT 1");
    }
}
