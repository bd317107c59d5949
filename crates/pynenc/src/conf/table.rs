//! The field table: every configuration field defined once, with its
//! type, default, checks and documentation; the typed structs, their
//! defaults and the field list are derived from it.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use super::kinds::{BackendKind, RunnerKind};
use super::tasks::TaskOverrides;
use super::value::{
    at_least_one, mask_secret, non_empty, non_negative, parse_raw, positive, FieldValue, Raw,
};
use super::{ConfigSource, TASK_SECTION};
use pynenc_model::ArgumentPrintMode;
use pynenc_model::Serializer;

/// One configuration field, as listed by [`PynencConfig::fields`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigField {
    /// The section (`""` for the global fields).
    pub section: &'static str,
    /// The field name.
    pub name: &'static str,
    /// What kind of value it takes, e.g. "an unsigned integer".
    pub kind: &'static str,
    /// What it does.
    pub doc: &'static str,
    /// Whether its value is hidden by `describe` and `Debug`.
    pub secret: bool,
}

impl ConfigField {
    /// The full key: `section.name`, or `name` for a global field.
    pub fn key(&self) -> String {
        if self.section.is_empty() {
            self.name.to_string()
        } else {
            format!("{}.{}", self.section, self.name)
        }
    }
}

/// Defines every field once; derives the typed structs, their defaults and
/// `Debug` (hiding secrets), the field table and the typed setter/getter.
macro_rules! config_table {
    (
        global {
            $(
                $(#[doc = $gdoc:literal])+
                $gname:ident : $gty:ty = $gdefault:expr
                    $(, check = $gcheck:path)? $(, secret = $gsecret:literal)? ;
            )*
        }
        $(
            $(#[doc = $sdoc:literal])+
            $section:ident : $sty:ident {
                $(
                    $(#[doc = $fdoc:literal])+
                    $fname:ident : $fty:ty = $fdefault:expr
                        $(, check = $fcheck:path)? $(, secret = $fsecret:literal)? ;
                )*
            }
        )*
    ) => {
        $(
            $(#[doc = $sdoc])+
            #[derive(Clone, PartialEq)]
            pub struct $sty {
                $(
                    $(#[doc = $fdoc])+
                    pub $fname: $fty,
                )*
            }

            impl Default for $sty {
                fn default() -> Self {
                    $sty { $( $fname: $fdefault, )* }
                }
            }

            impl fmt::Debug for $sty {
                fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    let mut d = f.debug_struct(stringify!($sty));
                    $(
                        if false $(|| $fsecret)? {
                            d.field(stringify!($fname), &mask_secret(&FieldValue::to_json(&self.$fname)));
                        } else {
                            d.field(stringify!($fname), &self.$fname);
                        }
                    )*
                    d.finish()
                }
            }
        )*

        /// Typed, resolved configuration, with the source of every value.
        ///
        /// Build it with [`ConfigLoader`](crate::conf::ConfigLoader) (or [`PynencConfig::load`]);
        /// [`PynencConfig::default`] holds the defaults only.
        #[derive(Clone, PartialEq)]
        pub struct PynencConfig {
            $(
                $(#[doc = $gdoc])+
                pub $gname: $gty,
            )*
            $(
                $(#[doc = $sdoc])+
                pub $section: $sty,
            )*
            /// The source of every value that is not a default, by key.
            pub(crate) sources: BTreeMap<String, ConfigSource>,
            /// Per-task overrides, by the task's shell key (see `tasks.rs`).
            pub(crate) task_overrides: BTreeMap<String, TaskOverrides>,
        }

        impl Default for PynencConfig {
            /// All defaults: no environment, no files.
            fn default() -> Self {
                let mut config = PynencConfig {
                    $( $gname: $gdefault, )*
                    $( $section: $sty::default(), )*
                    sources: BTreeMap::new(),
                    task_overrides: BTreeMap::new(),
                };
                config.resolve_derived();
                config
            }
        }

        impl fmt::Debug for PynencConfig {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut d = f.debug_struct("PynencConfig");
                $(
                    if false $(|| $gsecret)? {
                        d.field(stringify!($gname), &mask_secret(&FieldValue::to_json(&self.$gname)));
                    } else {
                        d.field(stringify!($gname), &self.$gname);
                    }
                )*
                $( d.field(stringify!($section), &self.$section); )*
                d.field("sources", &self.sources);
                d.field("task_overrides", &self.task_overrides);
                d.finish()
            }
        }

        /// The sections, in table order.
        pub(crate) const SECTIONS: &[&str] = &[$( stringify!($section) ),*];

        /// Every field, in table order.
        pub(crate) static FIELDS: &[ConfigField] = &[
            $(
                ConfigField {
                    section: "",
                    name: stringify!($gname),
                    kind: <$gty as FieldValue>::KIND,
                    doc: concat!($($gdoc),+),
                    secret: false $(|| $gsecret)?,
                },
            )*
            $($(
                ConfigField {
                    section: stringify!($section),
                    name: stringify!($fname),
                    kind: <$fty as FieldValue>::KIND,
                    doc: concat!($($fdoc),+),
                    secret: false $(|| $fsecret)?,
                },
            )*)*
        ];

        /// Parses, checks and sets one field; the error is the reason.
        pub(crate) fn set_field(
            config: &mut PynencConfig,
            field: &ConfigField,
            raw: Raw<'_>,
        ) -> Result<(), String> {
            match (field.section, field.name) {
                $(
                    ("", stringify!($gname)) => {
                        let value: $gty = parse_raw(raw)?;
                        $( $gcheck(&value)?; )?
                        config.$gname = value;
                    }
                )*
                $($(
                    (stringify!($section), stringify!($fname)) => {
                        let value: $fty = parse_raw(raw)?;
                        $( $fcheck(&value)?; )?
                        config.$section.$fname = value;
                    }
                )*)*
                _ => return Err(format!("unknown key '{}'", field.key())),
            }
            Ok(())
        }

        /// A field's value as written in a configuration file.
        pub(crate) fn field_value(config: &PynencConfig, field: &ConfigField) -> Value {
            match (field.section, field.name) {
                $( ("", stringify!($gname)) => FieldValue::to_json(&config.$gname), )*
                $($(
                    (stringify!($section), stringify!($fname)) => {
                        FieldValue::to_json(&config.$section.$fname)
                    }
                )*)*
                _ => Value::Null,
            }
        }
    };
}

config_table! {
    global {
        /// The application id: separates the data of apps sharing one backend.
        app_id: String = "pynenc".to_string(), check = non_empty;
        /// Run every call synchronously in the calling process (development and tests).
        dev_mode_force_sync_tasks: bool = false;
        /// The serializer of arguments and results: `json` or `message_pack`.
        serializer: Serializer = Serializer::Json;
        /// The backend of broker, orchestrator and state: `memory`, `sqlite`, `redis` or `postgres`.
        backend: BackendKind = BackendKind::Memory;
        /// How arguments are shown in logs: `full`, `keys`, `truncated` or `hidden`.
        print_arguments: ArgumentPrintMode = ArgumentPrintMode::default();
        /// How many characters of each argument `truncated` shows.
        truncate_arguments_length: usize = 32;
        /// The largest serialized argument accepted, in bytes (default 512 MiB).
        max_argument_bytes: usize = 512 * 1024 * 1024, check = at_least_one;
    }

    /// Settings of the orchestrator (`[orchestrator]`, `PYNENC__ORCHESTRATOR__*`).
    orchestrator: OrchestratorConfig {
        /// Detect calls that would close a cycle of invocations waiting for each other.
        cycle_control: bool = true;
        /// Prefer invocations that others wait on, and free the slot of a waiting one.
        blocking_control: bool = true;
        /// The seed's purge of the orchestration data of final invocations,
        /// in hours. Here an invocation holds no orchestration data once final
        /// (waits, call edges, running keys and cancel requests go in the
        /// transition that makes it final), so nothing waits for this purge;
        /// how long records, results and history stay is `[retention]`.
        auto_final_invocation_purge_hours: f64 = 24.0, check = non_negative;
        /// How often the automatic purge runs, in seconds.
        auto_purge_interval_seconds: f64 = 60.0, check = positive;
        /// How long an invocation may stay PENDING before it is recovered, in seconds.
        max_pending_seconds: f64 = 10.0, check = positive;
    }

    /// How long final invocations are kept (`[retention]`,
    /// `PYNENC__RETENTION__*`): their record, result or error and history,
    /// then the auto purge deletes them.
    retention: RetentionConfig {
        /// Hours a `SUCCESS` (or `CONCURRENCY_CONTROLLED_FINAL`) invocation is kept after it ended.
        success_hours: f64 = 24.0, check = non_negative;
        /// Hours a `FAILED` invocation is kept after it ended (longer by default: failures get looked at).
        failed_hours: f64 = 168.0, check = non_negative;
        /// Hours a `CANCELLED` invocation is kept after it ended.
        cancelled_hours: f64 = 24.0, check = non_negative;
        /// At most this many final invocations are kept, the oldest ends
        /// purged first (0: no limit).
        max_final_invocations: u64 = 0;
    }

    /// The data store (`[data_store]`, `PYNENC__DATA_STORE__*`): arguments
    /// and results above a size kept once per content in the backend, the
    /// records carrying a reference.
    data_store: DataStoreConfig {
        /// Keep large arguments and results in the data store (false: every
        /// value stays in its record).
        data_store_enabled: bool = true;
        /// Serialized arguments and results longer than this many bytes go to
        /// the data store (a task may set its own `data_store_min_size_bytes`).
        min_size_bytes: usize = 64 * 1024, check = at_least_one;
        /// How many bytes of stored values each process keeps in memory, so
        /// that a value read by many invocations is fetched once.
        local_cache_bytes: usize = 256 * 1024 * 1024;
        /// How long a stored value no invocation refers to is kept, in
        /// seconds (it covers a call between storing its values and routing).
        grace_seconds: f64 = 300.0, check = non_negative;
    }

    /// How runners evaluate the app's triggers (`[triggers]`,
    /// `PYNENC__TRIGGERS__*`): one runner at a time, under a lease.
    triggers: TriggersConfig {
        /// How often the runner holding the triggers' lease looks for due
        /// ticks, in seconds.
        evaluate_interval_seconds: f64 = 0.5, check = positive;
        /// Ticks up to this late are still fired (by the next evaluator,
        /// after a runner died or while none was up); older ones are
        /// skipped. In seconds.
        missed_tick_window_seconds: f64 = 10.0, check = positive;
    }

    /// Settings of the runners (`[runner]`, `PYNENC__RUNNER__*`).
    runner: RunnerConfig {
        /// The runner `app.runner()` builds: `thread` (in-process), `process`
        /// (a child process per invocation), `persistent_process` (a fixed pool
        /// of worker processes) or `multi_thread` (worker processes running
        /// threads, scaled by queue depth). A process kind with no backend
        /// configured selects `sqlite`.
        kind: RunnerKind = RunnerKind::Thread;
        /// How many invocations a runner runs at once; 0 means auto: 8 per CPU core
        /// (see [`PynencConfig::effective_max_parallel_slots`]).
        max_parallel_slots: usize = 0;
        /// How long a stopping runner waits for running invocations, in seconds.
        shutdown_grace_seconds: f64 = 5.0, check = non_negative;
        /// How often a runner reports that it is alive, in seconds.
        heartbeat_interval_seconds: f64 = 0.5, check = positive;
        /// A runner silent for this long is dead and its work is recovered, in seconds.
        runner_dead_after_seconds: f64 = 2.0, check = positive;
        /// How often the recovery service looks for dead runners' work, in seconds.
        recovery_interval_seconds: f64 = 0.5, check = positive;
        /// How often a runner that runs invocations asks whether any of them
        /// was cancelled, in seconds.
        cancel_poll_seconds: f64 = 0.2, check = positive;
        /// How long a stopped or dead runner is still listed, in seconds.
        runner_info_keep_seconds: f64 = 3600.0, check = non_negative;
        /// The least number of worker processes of a multi-process runner.
        min_processes: usize = 1, check = at_least_one;
        /// The most worker processes of a multi-process runner; 0 means the number of CPUs.
        max_processes: usize = 0;
        /// How many invocations a runner takes ahead for each body it runs
        /// at once (a thread runner's slot, a multi-thread runner worker's
        /// slot, a persistent-process worker).
        /// While its runs are short (under `prefetch_long_run_ms`) it takes
        /// more, up to this many per body, and runs them as bodies free
        /// up: their ends and the next pick-ups are recorded together. Once
        /// a body has run that long it takes no more than its bodies, and
        /// once every body has, it gives back what it took ahead
        /// (re-routed), so that nothing waits behind long runs. 1: never
        /// ahead (nor on the memory backend, whose steps cost no round
        /// trip: a thread runner there never takes ahead).
        prefetch: usize = 64, check = at_least_one;
        /// How long a body runs before it counts as long (see `prefetch`),
        /// in milliseconds.
        prefetch_long_run_ms: u64 = 5, check = at_least_one;
    }

    /// Settings of the SQLite backend (`[sqlite]`, `PYNENC__SQLITE__*`).
    sqlite: SqliteConfig {
        /// The database file.
        sqlite_path: String = "pynenc.db".to_string(), check = non_empty;
        /// How long a statement waits for a locked database, in milliseconds.
        busy_timeout_ms: u64 = 5000;
        /// The shortest wait between two polls for new work, in milliseconds.
        poll_min_ms: u64 = 1, check = at_least_one;
        /// The longest wait between two polls for new work, in milliseconds.
        poll_max_ms: u64 = 50, check = at_least_one;
    }

    /// Settings of the Redis backend (`[redis]`, `PYNENC__REDIS__*`).
    redis: RedisConfig {
        /// A connection URL (`redis://` or `rediss://` for TLS); when set it
        /// takes the place of host, port, db, username and password.
        redis_url: String = String::new(), secret = true;
        /// The server host.
        redis_host: String = "localhost".to_string();
        /// The server port.
        redis_port: u16 = 6379;
        /// The database number.
        redis_db: u32 = 0;
        /// The ACL user name (empty: none).
        redis_username: String = String::new();
        /// The password (empty: none).
        redis_password: String = String::new(), secret = true;
        /// The prefix of every key pynenc writes.
        redis_key_prefix: String = "__pynenc__".to_string();
        /// How many connections a process keeps open.
        redis_pool_size: usize = 4, check = at_least_one;
        /// For `rediss://`: a PEM file of the certificate authorities to trust
        /// (empty: the system's trust store).
        redis_tls_ca_file: String = String::new();
    }

    /// Settings of the PostgreSQL backend (`[postgres]`, `PYNENC__POSTGRES__*`).
    postgres: PostgresConfig {
        /// The connection URL (`postgres://user:password@host:port/database`);
        /// the database must exist.
        postgres_url: String = "postgres://localhost/pynenc".to_string(), check = non_empty, secret = true;
        /// How long to wait for a connection, in milliseconds.
        postgres_connect_timeout_ms: u64 = 5000, check = at_least_one;
        /// How long a step keeps trying while the server cannot be reached, in milliseconds.
        postgres_retry_for_ms: u64 = 60000;
        /// For a URL with `sslmode=require` (TLS): a PEM file of the
        /// certificate authorities to trust (empty: the system's trust store).
        postgres_tls_ca_file: String = String::new();
        /// How many connections a process keeps for queries (listings,
        /// counts, the monitor), answered on committed data without waiting
        /// for the app's steps; 0 sends them through the steps' connection.
        postgres_pool_size: usize = 2;
    }
}

/// The field `name` of `section` (`""` for global).
pub(crate) fn find_field(section: &str, name: &str) -> Option<&'static ConfigField> {
    FIELDS
        .iter()
        .find(|f| f.section == section && f.name == name)
}

/// Why a name at the top level does not name a field.
pub(crate) enum TopLevelMiss {
    Unknown,
    Ambiguous(Vec<&'static str>),
}

/// A global field, or a section field whose name is unique across sections.
pub(crate) fn find_top_level(name: &str) -> Result<&'static ConfigField, TopLevelMiss> {
    if let Some(f) = find_field("", name) {
        return Ok(f);
    }
    let matches: Vec<&'static ConfigField> = FIELDS.iter().filter(|f| f.name == name).collect();
    match matches.as_slice() {
        [] => Err(TopLevelMiss::Unknown),
        [one] => Ok(one),
        many => Err(TopLevelMiss::Ambiguous(
            many.iter().map(|f| f.section).collect(),
        )),
    }
}

/// A field given by its full key (`section.field` or `field`, the latter also
/// for a section field with a unique name).
pub(crate) fn find_key(key: &str) -> Option<&'static ConfigField> {
    match key.split_once('.') {
        Some((section, name)) => find_field(section, name),
        None => find_top_level(key).ok(),
    }
}

pub(crate) fn known_keys_of(section: &str) -> String {
    FIELDS
        .iter()
        .filter(|f| f.section == section)
        .map(|f| f.name)
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn known_sections() -> String {
    let mut all: Vec<&str> = SECTIONS.to_vec();
    all.push(TASK_SECTION);
    all.join(", ")
}

pub(crate) fn unknown_key_reason(section: &str) -> String {
    if section.is_empty() {
        format!(
            "unknown key (global keys: {}; sections: {})",
            known_keys_of(""),
            known_sections()
        )
    } else {
        format!(
            "unknown key (keys of section [{section}]: {})",
            known_keys_of(section)
        )
    }
}

pub(crate) fn unknown_section_reason(section: &str) -> String {
    format!(
        "unknown section '{section}' (known sections: {})",
        known_sections()
    )
}

pub(crate) fn ambiguous_reason(name: &str, sections: &[&str]) -> String {
    format!(
        "'{name}' is a field of several sections ({}): give it inside its section",
        sections.join(", ")
    )
}
