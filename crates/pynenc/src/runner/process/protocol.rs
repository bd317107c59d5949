//! The protocol between a process runner and its children: lines on the
//! child's standard output, marked so they are told apart from what the
//! task prints, and lines on the child's standard input.

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

/// Writes a protocol line for the parent runner on standard output.
pub(crate) fn report_to_parent(what: &str, detail: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{MARK}{what} {detail}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

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
