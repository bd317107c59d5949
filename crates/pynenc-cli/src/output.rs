//! How answers are printed: aligned tables and lines for people (colour
//! only on a terminal, never with `NO_COLOR`), one JSON document for
//! scripts, times and durations in short forms.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use pynenc::{InvocationStatus, Timestamp};
use serde::Serialize;

use crate::error::{CliError, Result};

/// Where a command prints, and how.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    /// One JSON document instead of text.
    pub json: bool,
    /// Colour in text output.
    pub colour: bool,
}

impl Out {
    /// Text or JSON as asked; colour when stdout is a terminal and
    /// `NO_COLOR` is not set.
    pub fn new(json: bool) -> Self {
        let colour = !json
            && std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        Out { json, colour }
    }

    /// Prints `value` as pretty JSON.
    pub fn json<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        let text = serde_json::to_string_pretty(value)
            .map_err(|e| CliError::Failed(format!("cannot write the answer as JSON: {e}")))?;
        line(&text)
    }

    /// A status name, coloured by how it ended (or not) on a terminal.
    pub fn status(&self, s: InvocationStatus) -> String {
        let name = s.as_str();
        if !self.colour {
            return name.to_string();
        }
        let code = match s {
            InvocationStatus::Success => "32",
            InvocationStatus::Failed => "31",
            InvocationStatus::Cancelled | InvocationStatus::ConcurrencyControlledFinal => "33",
            InvocationStatus::Running | InvocationStatus::Pending => "36",
            _ => "0",
        };
        format!("\x1b[{code}m{name}\x1b[0m")
    }

    /// `text` in bold on a terminal.
    pub fn bold(&self, text: &str) -> String {
        if self.colour {
            format!("\x1b[1m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

/// Prints one line on stdout; a closed pipe (`| head`) ends quietly.
pub fn line(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}") {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::Failed(format!("cannot write to stdout: {e}"))),
    }
}

/// A table: a header and rows, columns padded to their widest cell (by
/// visible width: colour codes do not count).
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column names.
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Whether it has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row, no trailing spaces.
    pub fn render(&self, out: &Out) -> String {
        let n = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| visible_len(h)).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                widths[i] = widths[i].max(visible_len(c));
            }
        }
        let mut text = String::new();
        let header: Vec<String> = self.header.iter().map(|h| out.bold(h)).collect();
        push_row(&mut text, &header, &widths);
        for r in &self.rows {
            push_row(&mut text, r, &widths);
        }
        text.truncate(text.trim_end().len());
        text
    }

    /// Prints the table (or `empty` when it has no rows).
    pub fn print(&self, out: &Out, empty: &str) -> Result<()> {
        if self.is_empty() {
            return line(empty);
        }
        line(&self.render(out))
    }
}

fn push_row(text: &mut String, cells: &[String], widths: &[usize]) {
    let mut l = String::new();
    for (i, c) in cells.iter().enumerate() {
        l.push_str(c);
        if i + 1 < cells.len() {
            let pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(visible_len(c));
            l.push_str(&" ".repeat(pad + 2));
        }
    }
    text.push_str(l.trim_end());
    text.push('\n');
}

/// Characters shown, without ANSI colour sequences.
fn visible_len(s: &str) -> usize {
    let mut n = 0;
    let mut in_escape = false;
    for ch in s.chars() {
        if in_escape {
            if ch == 'm' {
                in_escape = false;
            }
        } else if ch == '\x1b' {
            in_escape = true;
        } else {
            n += 1;
        }
    }
    n
}

/// A time as `2026-12-05 14:32:00.123` (UTC).
pub fn time(t: Timestamp) -> String {
    let s = t.to_rfc3339();
    // 2026-12-05T14:32:00.123456Z → 2026-12-05 14:32:00.123
    match (s.get(..10), s.get(11..23)) {
        (Some(date), Some(clock)) => format!("{date} {clock}"),
        _ => s,
    }
}

/// A duration as `850µs`, `12.3ms`, `4.2s`, `3m05s`, `2h04m`, `3d02h`.
pub fn duration(d: Duration) -> String {
    let us = d.as_micros();
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.1}ms", us as f64 / 1_000.0)
    } else if us < 60_000_000 {
        format!("{:.1}s", us as f64 / 1_000_000.0)
    } else {
        let s = d.as_secs();
        if s < 3_600 {
            format!("{}m{:02}s", s / 60, s % 60)
        } else if s < 86_400 {
            format!("{}h{:02}m", s / 3_600, (s % 3_600) / 60)
        } else {
            format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3_600)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_by_visible_width() {
        let out = Out {
            json: false,
            colour: false,
        };
        let mut t = Table::new(&["ID", "STATUS"]);
        t.row(vec!["a".into(), "\x1b[32mSUCCESS\x1b[0m".into()]);
        t.row(vec!["bbbb".into(), "FAILED".into()]);
        assert_eq!(
            t.render(&out),
            "ID    STATUS\na     \x1b[32mSUCCESS\x1b[0m\nbbbb  FAILED"
        );
    }

    #[test]
    fn durations_read_short() {
        assert_eq!(duration(Duration::from_micros(850)), "850µs");
        assert_eq!(duration(Duration::from_micros(12_345)), "12.3ms");
        assert_eq!(duration(Duration::from_millis(4_200)), "4.2s");
        assert_eq!(duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(duration(Duration::from_secs(7_440)), "2h04m");
        assert_eq!(duration(Duration::from_secs(266_400)), "3d02h");
    }

    #[test]
    fn times_read_short() {
        assert_eq!(
            time(Timestamp::from_micros(1_796_502_170_860_966)),
            "2026-12-05 20:22:50.860"
        );
    }
}
