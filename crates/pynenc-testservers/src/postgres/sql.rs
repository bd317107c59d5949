//! Talking to a server without a client library: names, URLs, `psql`.

use std::io::Write;
use std::process::{Command, Stdio};

use super::*;

/// `"name"`, quoted for SQL.
pub(super) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Percent-encodes everything but the unreserved characters of a URL.
pub(super) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `url` with its database replaced by `database` (its query kept); for a
/// `key=value` connection string, `dbname=` is appended (the last wins).
pub(super) fn with_database(url: &str, database: &str) -> String {
    let Some(scheme) = url.find("://").map(|i| i + 3) else {
        return format!("{url} dbname='{}'", database.replace('\'', "\\'"));
    };
    let end_of_authority = url[scheme..]
        .find(['/', '?'])
        .map_or(url.len(), |i| scheme + i);
    let query = url[end_of_authority..]
        .find('?')
        .map_or("", |i| &url[end_of_authority + i..]);
    format!(
        "{}/{}{query}",
        &url[..end_of_authority],
        percent_encode(database)
    )
}

/// `url` with its password hidden, for messages.
pub(super) fn redact(url: &str) -> String {
    let Some(scheme) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let end_of_authority = url[scheme..]
        .find(['/', '?'])
        .map_or(url.len(), |i| scheme + i);
    let authority = &url[scheme..end_of_authority];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:***{}",
            &url[..scheme],
            &authority[..colon],
            &url[scheme + at..]
        ),
        _ => url.to_string(),
    }
}

/// Runs `sql` (a script: one statement after another, stopping at the
/// first error) with `psql` on `url` and returns its output (unaligned,
/// tuples only: one line a row, columns separated by `|`). `own_server`:
/// the `PG*` variables of the environment (`PGSSLMODE`, `PGPASSWORD`, …) are
/// not passed, they are meant for other servers.
pub(super) fn run_psql(url: &str, sql: &str, own_server: bool) -> Result<String, String> {
    let psql = tool("psql").ok_or_else(|| {
        "psql not found on PATH nor in /usr/lib/postgresql/*/bin; install it (Debian: apt-get install postgresql-client)".to_string()
    })?;
    let mut cmd = Command::new(&psql);
    if own_server {
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PG") {
                cmd.env_remove(key);
            }
        }
    }
    cmd.args(["-X", "-w", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(url)
        .args(["-f", "-"])
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", psql.display()))?;
    let stdin = child.stdin.take();
    let script = sql.to_string();
    // written from another thread: a long script must not block on a full
    // output pipe
    let writer = std::thread::spawn(move || {
        if let Some(mut stdin) = stdin {
            let _ = stdin.write_all(script.as_bytes());
        }
    });
    let output = child
        .wait_with_output()
        .map_err(|e| format!("cannot wait for psql: {e}"))?;
    let _ = writer.join();
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "psql exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
