//! The protocol between a process runner and its children: lines on the
//! child's standard output, marked so they are told apart from what the
//! task prints, and lines on the child's standard input.

use std::time::Duration;

use parking_lot::Mutex;

/// Prefix of the protocol lines a child writes on its standard output.
const MARK: &str = "\u{1e}pynenc:";

/// Splits a line of a child's output: what the task printed is passed on
/// to this process's output, and the protocol request, if any, is returned
/// (it may follow output that did not end its line).
pub(crate) fn protocol_request(line: &str) -> Option<&str> {
    match line.find(MARK) {
        Some(at) => {
            if at > 0 {
                println!("{}", &line[..at]);
            }
            Some(&line[at + MARK.len()..])
        }
        None => {
            println!("{line}");
            None
        }
    }
}

/// How long a line that may wait ([`report_to_parent_soon`]) waits at most
/// for a line that may not, to go in the same write.
const LINGER: Duration = Duration::from_millis(1);

/// Lines that may wait, not written yet, and whether a flush is scheduled.
static OUTBOX: Mutex<Outbox> = Mutex::new(Outbox::new());

struct Outbox {
    pending: String,
    flush_scheduled: bool,
}

impl Outbox {
    const fn new() -> Self {
        Outbox {
            pending: String::new(),
            flush_scheduled: false,
        }
    }

    fn push(&mut self, what: &str, detail: &str) {
        self.pending.push_str(MARK);
        self.pending.push_str(what);
        self.pending.push(' ');
        self.pending.push_str(detail);
        self.pending.push('\n');
    }

    /// Writes what is pending to `out` in one write (the lock on the
    /// outbox is held meanwhile: lines keep the order they were reported
    /// in).
    fn write_pending_to(&mut self, out: &mut impl std::io::Write) {
        if self.pending.is_empty() {
            return;
        }
        let _ = out.write_all(self.pending.as_bytes());
        let _ = out.flush();
        self.pending.clear();
    }

    /// [`Outbox::write_pending_to`] standard output.
    fn write_pending(&mut self) {
        self.write_pending_to(&mut std::io::stdout().lock());
    }
}

/// Writes a protocol line for the parent runner on standard output now,
/// after the lines that were waiting ([`report_to_parent_soon`]), in one
/// write. For what the parent must know before anything else happens:
/// a body begins (it may crash the process), a wait, a cancel.
pub(crate) fn report_to_parent(what: &str, detail: &str) {
    let mut outbox = OUTBOX.lock();
    outbox.push(what, detail);
    outbox.write_pending();
}

/// A protocol line that may wait up to [`LINGER`] for the next line
/// written now: an invocation taken ahead, a run that ended. Most go in
/// the write of the next `start`, so a busy worker makes one write per
/// invocation instead of three (each wakes the parent). The parent reads
/// a worker's death only after its reader saw the end of the pipe, and it
/// asks the store before blaming an invocation it believes running.
pub(crate) fn report_to_parent_soon(what: &str, detail: &str) {
    let mut outbox = OUTBOX.lock();
    outbox.push(what, detail);
    if outbox.flush_scheduled {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        outbox.write_pending();
        return;
    };
    outbox.flush_scheduled = true;
    drop(outbox);
    runtime.spawn(async {
        tokio::time::sleep(LINGER).await;
        let mut outbox = OUTBOX.lock();
        outbox.flush_scheduled = false;
        outbox.write_pending();
    });
}

/// Writes the lines still waiting (before the process exits).
pub(crate) fn flush_reports() {
    OUTBOX.lock().write_pending();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_that_may_wait_go_before_the_next_one_in_one_write() {
        let mut outbox = Outbox::new();
        let mut written: Vec<Vec<u8>> = Vec::new();
        let mut write = |outbox: &mut Outbox| {
            let mut out = Vec::new();
            outbox.write_pending_to(&mut out);
            written.push(out);
        };
        outbox.push("end", "a");
        outbox.push("taken", "b");
        outbox.push("start", "b");
        write(&mut outbox);
        write(&mut outbox); // nothing left: no write
        let first = String::from_utf8(written[0].clone()).expect("utf-8");
        let requests: Vec<_> = first.lines().filter_map(protocol_request).collect();
        assert_eq!(
            requests,
            ["end a", "taken b", "start b"],
            "in the order reported"
        );
        assert!(written[1].is_empty(), "{:?}", written[1]);
    }

    #[test]
    fn protocol_lines_are_found_after_unterminated_output() {
        assert_eq!(
            protocol_request("\u{1e}pynenc:start abc"),
            Some("start abc")
        );
        assert_eq!(
            protocol_request("printed without a newline\u{1e}pynenc:wait [\"x\"]"),
            Some("wait [\"x\"]")
        );
        assert_eq!(protocol_request("plain output"), None);
    }
}
