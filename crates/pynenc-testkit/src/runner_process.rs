//! A runner process of the testkit's `worker` binary (`worker run`) whose
//! output a test reads: standard output collected line by line, standard
//! error in a log file, both shown when an assertion fails.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::process::{signal, SharedBackend, WorkerProcess};

/// A `worker run` process on a shared backend; killed (SIGKILL) when
/// dropped, so a failing test leaves no process behind.
pub struct RunnerProcess {
    process: WorkerProcess,
    /// Its process id.
    pub pid: u32,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr_log: PathBuf,
}

impl RunnerProcess {
    /// Starts `exe run` (the `worker` binary) on `backend` for `app_id`
    /// with 8 slots and the `extra` environment; its standard error goes to
    /// `<logs>/<name>.stderr`.
    pub fn start(
        exe: &str,
        backend: &SharedBackend,
        logs: &Path,
        app_id: &str,
        name: &str,
        extra: &[(&str, &str)],
    ) -> RunnerProcess {
        let stderr_log = logs.join(format!("{name}.stderr"));
        let stderr = std::fs::File::create(&stderr_log).expect("create the worker's stderr log");
        let mut env = vec![("PYNENC__RUNNER__MAX_PARALLEL_SLOTS", "8")];
        env.extend_from_slice(extra);
        let mut cmd = WorkerProcess::command(exe, &["run"], backend, app_id, &env);
        cmd.stdout(Stdio::piped()).stderr(stderr);
        let mut process = WorkerProcess::spawn(cmd).expect("start the worker process");
        let pid = process.pid();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let lines = stdout.clone();
        let pipe = process
            .child_mut()
            .stdout
            .take()
            .expect("the worker's stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(|l| l.ok()) {
                lines.lock().expect("stdout lines").push(line);
            }
        });
        RunnerProcess {
            process,
            pid,
            stdout,
            stderr_log,
        }
    }

    /// What the process printed so far, for failure messages.
    pub fn output(&self) -> String {
        format!(
            "worker {} stdout: {:?}\nstderr: {}",
            self.pid,
            self.stdout.lock().expect("stdout lines"),
            std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
        )
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit that printed
    /// `DONE`; returns what it printed.
    pub fn stop(mut self) -> String {
        signal(self.pid, "-TERM");
        let status = self.process.wait_timeout(Duration::from_secs(20));
        let out = self.output();
        match status {
            Some(s) if s.success() => {}
            other => panic!("worker exited with {other:?} after SIGTERM\n{out}"),
        }
        // the stdout reader thread sees the pipe close right after the exit
        let printed_done = (0..200).any(|_| {
            let done = self
                .stdout
                .lock()
                .expect("stdout lines")
                .iter()
                .any(|l| l == "DONE");
            if !done {
                std::thread::sleep(Duration::from_millis(10));
            }
            done
        });
        assert!(printed_done, "worker did not print DONE\n{out}");
        out
    }

    /// SIGKILL, then reap the process.
    pub fn kill_9(mut self) {
        signal(self.pid, "-KILL");
        let status = self.process.wait_timeout(Duration::from_secs(10));
        assert!(status.is_some(), "worker {} survived SIGKILL", self.pid);
    }
}
