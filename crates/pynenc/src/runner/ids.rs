//! Who runs: runner ids and the execution context of this process.

use std::sync::OnceLock;

use pynenc_model::RunnerId;

/// The name of the host this process runs on.
pub(crate) fn host_name() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "localhost".into())
    })
}

/// The host name and process id of this process, for execution contexts and runner ids.
pub fn process_context() -> &'static str {
    static CTX: OnceLock<String> = OnceLock::new();
    CTX.get_or_init(|| format!("{}:{}", host_name(), std::process::id()))
}

/// A new runner id: the kind, this process (`host:pid`) and 8 random hex
/// digits.
pub(crate) fn new_runner_id(kind: &str) -> RunnerId {
    RunnerId::from(format!(
        "{kind}@{}:{}",
        process_context(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ))
}

/// The owner id of calls and waits made outside any runner in this process.
pub(crate) fn external_runner_id() -> RunnerId {
    RunnerId::from(format!("ExternalRunner@{}", process_context()))
}
