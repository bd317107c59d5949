//! The audit log: every action taken through the monitor (who, what, when,
//! and what came of it), kept in this process's memory (the latest ones,
//! newest first on the audit page), written to the log (`tracing`, target
//! `pynenc_monitor::audit`) and, when a file is configured, appended to it
//! as JSON lines (read back at start, so the page survives a restart).
//! Every change is also in the history of each invocation it touched, with
//! the monitor's user as actor.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::Mutex;

use pynenc_model::Timestamp;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

/// One action taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When it was taken.
    #[serde(rename = "at_us")]
    pub at: Timestamp,
    /// The user who took it.
    pub user: String,
    /// The action (`cancel`, `rerun`, `retry`, `purge`).
    pub action: String,
    /// What it was applied to: ids, or the filter.
    pub target: String,
    /// What came of it.
    pub outcome: String,
}

/// The actions taken, newest last, at most `capacity` of them, and how
/// many of each kind were taken since start.
#[derive(Debug)]
pub(crate) struct AuditLog {
    inner: Mutex<Inner>,
    capacity: usize,
    path: Option<std::path::PathBuf>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: VecDeque<AuditEntry>,
    totals: BTreeMap<String, u64>,
    file: Option<File>,
}

impl AuditLog {
    pub(crate) fn new(capacity: usize) -> Self {
        AuditLog {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
            path: None,
        }
    }

    /// Where the log lives, for the configuration page.
    pub(crate) fn describe(&self) -> String {
        let file = self
            .path
            .as_ref()
            .map(|p| format!(", appended to {}", p.display()))
            .unwrap_or_default();
        format!(
            "the latest {} in this process's memory, its log (target pynenc_monitor::audit){file}",
            self.capacity
        )
    }

    /// A log appended to `path` (created if missing), starting with the
    /// latest entries already there (lines that do not parse are skipped).
    pub(crate) fn with_file(capacity: usize, path: &Path) -> std::io::Result<Self> {
        let mut log = AuditLog::new(capacity);
        log.path = Some(path.to_path_buf());
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)?;
        {
            let mut inner = log.lock();
            for line in BufReader::new(File::open(path)?).lines() {
                match serde_json::from_str::<AuditEntry>(&line?) {
                    Ok(e) => {
                        if inner.entries.len() >= log.capacity {
                            inner.entries.pop_front();
                        }
                        inner.entries.push_back(e);
                    }
                    Err(e) => {
                        warn!(path = %path.display(), error = %e, "audit file: a line skipped")
                    }
                }
            }
            inner.file = Some(file);
        }
        Ok(log)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records an action.
    pub(crate) fn record(&self, user: &str, action: &str, target: String, outcome: String) {
        info!(target: "pynenc_monitor::audit", user, action, target = %target, outcome = %outcome, "monitor action");
        let mut inner = self.lock();
        if inner.entries.len() >= self.capacity {
            inner.entries.pop_front();
        }
        *inner.totals.entry(action.to_string()).or_insert(0) += 1;
        let entry = AuditEntry {
            at: Timestamp::now(),
            user: user.to_string(),
            action: action.to_string(),
            target,
            outcome,
        };
        if let Some(file) = inner.file.as_mut() {
            let written = serde_json::to_string(&entry)
                .map_err(std::io::Error::other)
                .and_then(|line| writeln!(file, "{line}"))
                .and_then(|()| file.sync_data());
            if let Err(e) = written {
                warn!(error = %e, "cannot append to the audit file");
            }
        }
        inner.entries.push_back(entry);
    }

    /// How many actions of each kind were taken since start.
    pub(crate) fn totals(&self) -> BTreeMap<String, u64> {
        self.lock().totals.clone()
    }

    /// How many actions were taken since start.
    pub(crate) fn len(&self) -> u64 {
        self.lock().totals.values().sum()
    }

    /// The entries, newest first.
    pub(crate) fn newest_first(&self) -> Vec<AuditEntry> {
        self.lock().entries.iter().rev().cloned().collect()
    }
}
