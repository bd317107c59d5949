//! Child processes: starting this program again as a child, signals, and
//! how a process ended.

use std::process::{ExitStatus, Stdio};

use pynenc_model::SerializationError;
use tokio::process::Command;

use super::{CHILD_ENV, CONFIG_ENV};
use crate::app::Pynenc;
use crate::conf::BackendKind;
use crate::exceptions::{PynencError, Result};

/// Process runners need a backend that other processes reach.
pub(crate) fn refuse_memory(app: &Pynenc, kind: &str) -> Result<()> {
    if app.conf().backend == BackendKind::Memory {
        return Err(PynencError::RunnerNotExecutable {
            message: format!(
                "{kind} runs invocations in other processes, which cannot see the in-memory backend \
                 of this process; configure backend = \"sqlite\" (one machine) or \"redis\""
            ),
        });
    }
    Ok(())
}

/// This program again, as a child of `mode`, with the app's effective configuration.
pub(crate) fn child_command(app: &Pynenc, mode: &str) -> Result<Command> {
    let exe = std::env::current_exe().map_err(|e| {
        PynencError::runner_caused("cannot find this program to start a child process", e)
    })?;
    let values = serde_json::to_string(&app.conf().effective_values())
        .map_err(|e| SerializationError::serialize("configuration for a child", e))?;
    let mut cmd = Command::new(exe);
    cmd.env(CHILD_ENV, mode)
        .env(CONFIG_ENV, values)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    Ok(cmd)
}

/// Sends `sig` to the child process `pid`.
/// Clears `O_NONBLOCK` on `fd` (the pipe was read by the runtime's
/// reactor until now), so that a read waits for the worker's output.
#[allow(unsafe_code)]
pub(crate) fn set_blocking(fd: &std::os::fd::OwnedFd) -> std::io::Result<()> {
    let raw = std::os::fd::AsRawFd::as_raw_fd(fd);
    // SAFETY: `fd` is an open descriptor owned by the caller for the call's
    // duration; F_GETFL and F_SETFL touch only its status flags.
    unsafe {
        let flags = libc::fcntl(raw, libc::F_GETFL);
        if flags < 0 || libc::fcntl(raw, libc::F_SETFL, flags & !libc::O_NONBLOCK) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[allow(unsafe_code)]
pub(crate) fn signal(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) with a pid of a child this runner started; no memory is involved.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// How a process ended, readable (`signal 11 (SIGSEGV)`).
pub(crate) fn describe_exit(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("signal {sig}{}", signal_name(sig)),
        _ => status.to_string(),
    }
}

/// Whether a process died of a fault of the code it ran (as opposed to
/// being killed from outside or exiting).
pub(crate) fn died_of_a_fault(status: &ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    matches!(
        status.signal(),
        Some(
            libc::SIGSEGV
                | libc::SIGABRT
                | libc::SIGBUS
                | libc::SIGILL
                | libc::SIGFPE
                | libc::SIGSYS
        )
    )
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGABRT => " (SIGABRT)",
        libc::SIGKILL => " (SIGKILL)",
        libc::SIGTERM => " (SIGTERM)",
        libc::SIGBUS => " (SIGBUS)",
        libc::SIGILL => " (SIGILL)",
        libc::SIGFPE => " (SIGFPE)",
        libc::SIGSYS => " (SIGSYS)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fault_signals_pin_a_crash() {
        use std::os::unix::process::ExitStatusExt;
        for sig in [
            libc::SIGSEGV,
            libc::SIGABRT,
            libc::SIGBUS,
            libc::SIGILL,
            libc::SIGFPE,
        ] {
            assert!(died_of_a_fault(&ExitStatus::from_raw(sig)), "signal {sig}");
        }
        for sig in [libc::SIGKILL, libc::SIGTERM, libc::SIGINT] {
            assert!(!died_of_a_fault(&ExitStatus::from_raw(sig)), "signal {sig}");
        }
        // exit code 1 (wait status 1 << 8)
        assert!(!died_of_a_fault(&ExitStatus::from_raw(1 << 8)));
        assert_eq!(
            describe_exit(&ExitStatus::from_raw(libc::SIGSEGV)),
            "signal 11 (SIGSEGV)"
        );
    }
}
