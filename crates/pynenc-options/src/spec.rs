//! The options as written in `#[task(...)]`: constant, before configuration.

use crate::{ConcurrencyControl, RegistrationScopeName};

/// Task options as written in `#[task(...)]` (a constant; configuration is
/// applied on top of it when an app is built). Each field is named after
/// its option in [`crate::OPTIONS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskOptionsSpec {
    /// How many times a retriable error is retried.
    pub max_retries: u32,
    /// Error kinds that are retried (the retry error always is).
    pub retry_for: &'static [&'static str],
    /// Concurrency control when picking invocations to run.
    pub running_concurrency: ConcurrencyControl,
    /// Concurrency control when routing new calls.
    pub registration_concurrency: ConcurrencyControl,
    /// The arguments that identify an invocation for `Keys` concurrency.
    pub key_arguments: &'static [&'static str],
    /// Raise instead of reusing when a registered invocation has other non-key arguments.
    pub on_diff_non_key_args_raise: bool,
    /// Which invocation registration concurrency reuses (`queued`, `active`, `cached`).
    pub registration_scope: RegistrationScopeName,
    /// How long, in seconds, a success is reused with `registration_scope = cached`.
    pub registration_cache_seconds: u32,
    /// Re-route instead of ending `CONCURRENCY_CONTROLLED_FINAL`.
    pub reroute_on_concurrency_control: bool,
    /// How many calls `parallelize` routes per batch.
    pub parallel_batch_size: usize,
    /// Parameters whose values stay in the record whatever their size.
    pub inline_arguments: &'static [&'static str],
    /// Arguments and results longer than this go to the data store (0:
    /// the app's `data_store.min_size_bytes`).
    pub data_store_min_size_bytes: u32,
    /// A durable workflow: its calls are recorded steps, replayed when it
    /// runs again.
    pub workflow: bool,
}

impl TaskOptionsSpec {
    /// Pynenc's defaults.
    pub const DEFAULT: TaskOptionsSpec = TaskOptionsSpec {
        max_retries: 0,
        retry_for: &[],
        running_concurrency: ConcurrencyControl::Disabled,
        registration_concurrency: ConcurrencyControl::Disabled,
        key_arguments: &[],
        on_diff_non_key_args_raise: false,
        registration_scope: RegistrationScopeName::Queued,
        registration_cache_seconds: 300,
        reroute_on_concurrency_control: true,
        parallel_batch_size: 100,
        inline_arguments: &[],
        data_store_min_size_bytes: 0,
        workflow: false,
    };
}

impl Default for TaskOptionsSpec {
    fn default() -> Self {
        TaskOptionsSpec::DEFAULT
    }
}
