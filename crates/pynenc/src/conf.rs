//! Configuration: layered, typed, and with the source of every value.
//!
//! A [`PynencConfig`] is built from these layers, each overriding the ones
//! before it:
//!
//! 1. the defaults (see [`PynencConfig::fields`]);
//! 2. the project file: `pynenc.toml` in the project directory (the current
//!    directory unless [`ConfigLoader::project_dir`] says otherwise), if it exists;
//! 3. files given in code with [`ConfigLoader::file`] (TOML, YAML or JSON, by
//!    extension `.toml`, `.yaml`/`.yml` or `.json`);
//! 4. the file named by the environment variable `PYNENC__FILEPATH`;
//! 5. environment variables: `PYNENC__<FIELD>` for the global fields,
//!    `PYNENC__<SECTION>__<FIELD>` (e.g. `PYNENC__RUNNER__MAX_PARALLEL_SLOTS=4`)
//!    and, per task, `PYNENC__TASK__<task id>__<OPTION>`
//!    (e.g. `PYNENC__TASK__my_crate::jobs::add__MAX_RETRIES=3`, or with `.`
//!    instead of `::`: `PYNENC__TASK__my_crate.jobs.add__MAX_RETRIES=3`);
//! 6. values set in code with [`ConfigLoader::value`] (`field`,
//!    `section.field` or `task.<task id>.<option>`).
//!
//! A file looks like this (YAML and JSON take the same tree):
//!
//! ```toml
//! app_id = "my-app"
//! dev_mode_force_sync_tasks = false
//! [orchestrator]
//! blocking_control = true
//! [runner]
//! max_parallel_slots = 8
//! [task."my_crate::jobs::add"]
//! max_retries = 3
//! ```
//!
//! A field of a section may also be written at the top level
//! (`max_parallel_slots = 8`, or `PYNENC__MAX_PARALLEL_SLOTS=8`) when its name
//! is unique across sections; within one layer the value given in the section
//! wins over the top-level one. Field names in environment variables are
//! case-insensitive; their values are parsed into the field's type (booleans
//! accept `true/false/1/0/yes/no`, lists are comma separated or a JSON array).
//!
//! Every value remembers where it came from ([`PynencConfig::source_of`],
//! [`PynencConfig::describe`]), and a value that cannot be accepted (unknown
//! key or section, wrong type, unreadable file) is a [`ConfigError`] naming
//! the source, the key and the reason.
//!
//! ```no_run
//! use pynenc::conf::ConfigLoader;
//!
//! let config = ConfigLoader::new()
//!     .file("config/pynenc.yaml")
//!     .value("runner.max_parallel_slots", 16)
//!     .load()?;
//! println!("{}", config.describe());
//! # Ok::<(), pynenc::exceptions::ConfigError>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::arguments::ArgumentPrintMode;
use crate::exceptions::{ConfigError, ConfigSource, PynencError};
use crate::serializer::Serializer;
use crate::task::{ConcurrencyControl, TaskOptions, TASK_OPTION_NAMES};

/// The name of the project configuration file, looked for in the project directory.
pub const PROJECT_FILE_NAME: &str = "pynenc.toml";
/// The prefix of every pynenc environment variable.
pub const ENV_PREFIX: &str = "PYNENC__";
/// The environment variable naming a configuration file.
pub const FILEPATH_ENV_VAR: &str = "PYNENC__FILEPATH";
/// The accepted values of the `backend` field.
pub const BACKENDS: &[&str] = &["memory", "sqlite", "redis"];

/// The key reported for errors about a whole file (unreadable, unparsable).
const FILE_KEY: &str = "(file)";
/// The name of the per-task section.
const TASK_SECTION: &str = "task";
/// What a secret value is shown as.
const MASK: &str = "***";

static DEFAULT_SOURCE: ConfigSource = ConfigSource::Default;

// ---------------------------------------------------------------------------
// Value conversion
// ---------------------------------------------------------------------------

/// A value as given by a layer: a typed tree (files, code) or a string (environment).
#[derive(Debug, Clone, Copy)]
enum Raw<'a> {
    Json(&'a Value),
    Env(&'a str),
}

/// A value owned by a layer before it is applied.
#[derive(Debug, Clone)]
enum RawValue {
    Json(Value),
    Env(String),
}

impl RawValue {
    fn as_raw(&self) -> Raw<'_> {
        match self {
            RawValue::Json(v) => Raw::Json(v),
            RawValue::Env(s) => Raw::Env(s),
        }
    }
}

/// A type a configuration field (or task option) can have.
trait FieldValue: Sized {
    /// What is expected, for error messages: "an unsigned integer".
    const KIND: &'static str;
    /// Reads a value from a file or from code.
    fn from_json(v: &Value) -> Result<Self, String>;
    /// Reads a value from an environment variable.
    fn from_env(s: &str) -> Result<Self, String>;
    /// The value as written in a configuration file.
    fn to_json(&self) -> Value;
}

fn parse_raw<T: FieldValue>(raw: Raw<'_>) -> Result<T, String> {
    match raw {
        Raw::Json(v) => T::from_json(v),
        Raw::Env(s) => T::from_env(s),
    }
}

/// "expected {kind}, got {got}".
fn expected(kind: &str, got: impl fmt::Display) -> String {
    format!("expected {kind}, got {got}")
}

/// A short description of a JSON value for error messages: `string "abc"`.
fn json_got(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {}", quote(s)),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "a table".into(),
    }
}

/// A string in double quotes, escaped as in JSON.
fn quote(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

macro_rules! impl_unsigned {
    ($($t:ty),*) => {$(
        impl FieldValue for $t {
            const KIND: &'static str = "an unsigned integer";

            fn from_json(v: &Value) -> Result<Self, String> {
                match v.as_u64() {
                    Some(u) => <$t>::try_from(u).map_err(|_| {
                        format!("expected an unsigned integer up to {}, got {u}", <$t>::MAX)
                    }),
                    None => Err(expected(Self::KIND, json_got(v))),
                }
            }

            fn from_env(s: &str) -> Result<Self, String> {
                match s.trim().parse::<u64>() {
                    Ok(u) => <$t>::try_from(u).map_err(|_| {
                        format!("expected an unsigned integer up to {}, got {u}", <$t>::MAX)
                    }),
                    Err(_) => Err(expected(Self::KIND, quote(s))),
                }
            }

            fn to_json(&self) -> Value {
                Value::from(*self)
            }
        }
    )*};
}

impl_unsigned!(u16, u32, u64, usize);

impl FieldValue for bool {
    const KIND: &'static str = "a boolean (true/false, 1/0, yes/no)";

    fn from_json(v: &Value) -> Result<Self, String> {
        v.as_bool().ok_or_else(|| expected(Self::KIND, json_got(v)))
    }

    fn from_env(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(expected(Self::KIND, quote(s))),
        }
    }

    fn to_json(&self) -> Value {
        Value::Bool(*self)
    }
}

impl FieldValue for f64 {
    const KIND: &'static str = "a number";

    fn from_json(v: &Value) -> Result<Self, String> {
        v.as_f64().ok_or_else(|| expected(Self::KIND, json_got(v)))
    }

    fn from_env(s: &str) -> Result<Self, String> {
        match s.trim().parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(f),
            _ => Err(expected(Self::KIND, quote(s))),
        }
    }

    fn to_json(&self) -> Value {
        Value::from(*self)
    }
}

impl FieldValue for String {
    const KIND: &'static str = "a string";

    fn from_json(v: &Value) -> Result<Self, String> {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| expected(Self::KIND, json_got(v)))
    }

    fn from_env(s: &str) -> Result<Self, String> {
        Ok(s.to_string())
    }

    fn to_json(&self) -> Value {
        Value::String(self.clone())
    }
}

/// Lists (task options): an array of strings, or one comma separated string.
impl FieldValue for Vec<String> {
    const KIND: &'static str = "a list of strings (comma separated or a JSON array)";

    fn from_json(v: &Value) -> Result<Self, String> {
        match v {
            Value::String(s) => Ok(split_list(s)),
            Value::Array(items) => items
                .iter()
                .map(|item| {
                    item.as_str().map(str::to_string).ok_or_else(|| {
                        expected(
                            Self::KIND,
                            format!("an array containing {}", json_got(item)),
                        )
                    })
                })
                .collect(),
            other => Err(expected(Self::KIND, json_got(other))),
        }
    }

    fn from_env(s: &str) -> Result<Self, String> {
        if s.trim_start().starts_with('[') {
            let v: Value = serde_json::from_str(s)
                .map_err(|e| expected(Self::KIND, format!("{} (invalid JSON: {e})", quote(s))))?;
            Self::from_json(&v)
        } else {
            Ok(split_list(s))
        }
    }

    fn to_json(&self) -> Value {
        Value::from(self.clone())
    }
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// Reads a named value from a string (files, code and environment alike).
fn named_from_json<T>(
    kind: &str,
    v: &Value,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<T, String> {
    match v.as_str() {
        Some(s) => parse(s).ok_or_else(|| expected(kind, quote(s))),
        None => Err(expected(kind, json_got(v))),
    }
}

impl FieldValue for Serializer {
    const KIND: &'static str = "a serializer name (json, message_pack)";

    fn from_json(v: &Value) -> Result<Self, String> {
        named_from_json(Self::KIND, v, Serializer::from_name)
    }

    fn from_env(s: &str) -> Result<Self, String> {
        Serializer::from_name(s.trim()).ok_or_else(|| expected(Self::KIND, quote(s)))
    }

    fn to_json(&self) -> Value {
        Value::from(self.name())
    }
}

/// The truncation length is filled in from `truncate_arguments_length` once
/// every layer is applied.
impl FieldValue for ArgumentPrintMode {
    const KIND: &'static str = "one of full, keys, truncated, hidden";

    fn from_json(v: &Value) -> Result<Self, String> {
        named_from_json(Self::KIND, v, |s| ArgumentPrintMode::parse(s, 0))
    }

    fn from_env(s: &str) -> Result<Self, String> {
        ArgumentPrintMode::parse(s.trim(), 0).ok_or_else(|| expected(Self::KIND, quote(s)))
    }

    fn to_json(&self) -> Value {
        Value::from(match self {
            ArgumentPrintMode::Full => "full",
            ArgumentPrintMode::Keys => "keys",
            ArgumentPrintMode::Truncated(_) => "truncated",
            ArgumentPrintMode::Hidden => "hidden",
        })
    }
}

impl FieldValue for ConcurrencyControl {
    const KIND: &'static str = "one of disabled, task, arguments, keys";

    fn from_json(v: &Value) -> Result<Self, String> {
        named_from_json(Self::KIND, v, ConcurrencyControl::from_name)
    }

    fn from_env(s: &str) -> Result<Self, String> {
        ConcurrencyControl::from_name(s.trim()).ok_or_else(|| expected(Self::KIND, quote(s)))
    }

    fn to_json(&self) -> Value {
        Value::from(self.name())
    }
}

// Checks applied to a field's value after it is parsed.

/// `v` must be one of `allowed`.
fn one_of(allowed: &[&str], v: &str) -> Result<(), String> {
    if allowed.contains(&v) {
        Ok(())
    } else {
        Err(expected(
            &format!("one of {}", allowed.join(", ")),
            quote(v),
        ))
    }
}

fn check_backend(v: &str) -> Result<(), String> {
    one_of(BACKENDS, v)
}

/// The runner kinds of `runner.kind`.
pub const RUNNER_KINDS: &[&str] = &["thread", "process", "persistent_process", "multi_thread"];

fn check_runner_kind(v: &str) -> Result<(), String> {
    one_of(RUNNER_KINDS, v)
}

fn non_empty(v: &str) -> Result<(), String> {
    if v.trim().is_empty() {
        Err("expected a non-empty string, got \"\"".into())
    } else {
        Ok(())
    }
}

fn non_negative(v: &f64) -> Result<(), String> {
    if *v >= 0.0 {
        Ok(())
    } else {
        Err(expected("a number of at least 0", v))
    }
}

fn positive(v: &f64) -> Result<(), String> {
    if *v > 0.0 {
        Ok(())
    } else {
        Err(expected("a number greater than 0", v))
    }
}

fn at_least_one<T: PartialEq + Default + fmt::Display>(v: &T) -> Result<(), String> {
    if *v == T::default() {
        Err(expected("an unsigned integer of at least 1", v))
    } else {
        Ok(())
    }
}

/// How a secret is shown: `***`, or a URL with its password replaced by `***`.
fn mask_secret(v: &Value) -> Value {
    match v.as_str() {
        Some("") => v.clone(),
        Some(s) => Value::from(mask_url(s).unwrap_or_else(|| MASK.to_string())),
        None => Value::from(MASK),
    }
}

/// `redis://user:pass@host` → `redis://user:***@host`; `None` if `s` is not a URL.
fn mask_url(s: &str) -> Option<String> {
    let scheme_end = s.find("://")? + 3;
    let rest = &s[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return Some(s.to_string());
    };
    let userinfo = &rest[..at];
    let masked = match userinfo.find(':') {
        Some(colon) => format!("{}:{MASK}", &userinfo[..colon]),
        None => userinfo.to_string(),
    };
    Some(format!("{}{masked}{}", &s[..scheme_end], &rest[at..]))
}

// ---------------------------------------------------------------------------
// The field table
// ---------------------------------------------------------------------------

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
        /// Build it with [`ConfigLoader`] (or [`PynencConfig::load`]);
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
            sources: BTreeMap<String, ConfigSource>,
            /// Per-task overrides: task id → option → (value, source).
            task_overrides: BTreeMap<String, BTreeMap<String, (Value, ConfigSource)>>,
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
        const SECTIONS: &[&str] = &[$( stringify!($section) ),*];

        /// Every field, in table order.
        static FIELDS: &[ConfigField] = &[
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
        fn set_field(
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
        fn field_value(config: &PynencConfig, field: &ConfigField) -> Value {
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
        /// The backend of broker, orchestrator and state: `memory`, `sqlite` or `redis`.
        backend: String = "memory".to_string(), check = check_backend;
        /// How arguments are shown in logs: `full`, `keys`, `truncated` or `hidden`.
        print_arguments: ArgumentPrintMode = ArgumentPrintMode::Truncated(32);
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
        /// Final invocations older than this many hours are purged automatically.
        auto_final_invocation_purge_hours: f64 = 24.0, check = non_negative;
        /// How often the automatic purge runs, in seconds.
        auto_purge_interval_seconds: f64 = 60.0, check = positive;
        /// How long an invocation may stay PENDING before it is recovered, in seconds.
        max_pending_seconds: f64 = 10.0, check = positive;
    }

    /// Settings of the runners (`[runner]`, `PYNENC__RUNNER__*`).
    runner: RunnerConfig {
        /// The runner `app.runner()` builds: `thread` (in-process), `process`
        /// (a child process per invocation), `persistent_process` (a fixed pool
        /// of worker processes) or `multi_thread` (worker processes running
        /// threads, scaled by queue depth). A process kind with no backend
        /// configured selects `sqlite`.
        kind: String = "thread".to_string(), check = check_runner_kind;
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
        /// The least number of worker processes of a multi-process runner.
        min_processes: usize = 1, check = at_least_one;
        /// The most worker processes of a multi-process runner; 0 means the number of CPUs.
        max_processes: usize = 0;
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
}

/// The field `name` of `section` (`""` for global).
fn find_field(section: &str, name: &str) -> Option<&'static ConfigField> {
    FIELDS
        .iter()
        .find(|f| f.section == section && f.name == name)
}

/// Why a name at the top level does not name a field.
enum TopLevelMiss {
    Unknown,
    Ambiguous(Vec<&'static str>),
}

/// A global field, or a section field whose name is unique across sections.
fn find_top_level(name: &str) -> Result<&'static ConfigField, TopLevelMiss> {
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
fn find_key(key: &str) -> Option<&'static ConfigField> {
    match key.split_once('.') {
        Some((section, name)) => find_field(section, name),
        None => find_top_level(key).ok(),
    }
}

fn known_keys_of(section: &str) -> String {
    FIELDS
        .iter()
        .filter(|f| f.section == section)
        .map(|f| f.name)
        .collect::<Vec<_>>()
        .join(", ")
}

fn known_sections() -> String {
    let mut all: Vec<&str> = SECTIONS.to_vec();
    all.push(TASK_SECTION);
    all.join(", ")
}

fn unknown_key_reason(section: &str) -> String {
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

fn unknown_section_reason(section: &str) -> String {
    format!(
        "unknown section '{section}' (known sections: {})",
        known_sections()
    )
}

fn ambiguous_reason(name: &str, sections: &[&str]) -> String {
    format!(
        "'{name}' is a field of several sections ({}): give it inside its section",
        sections.join(", ")
    )
}

/// Task ids are written with `::`; `.` is accepted in its place.
fn normalize_task_id(task_id: &str) -> String {
    task_id.replace('.', "::")
}

fn task_key(task_id: &str, option: &str) -> String {
    format!("{TASK_SECTION}.{task_id}.{option}")
}

/// Parses a task option, sets it on `options`, and returns the value as
/// written in a file.
fn apply_task_option(
    options: &mut TaskOptions,
    option: &str,
    raw: Raw<'_>,
) -> Result<Value, String> {
    fn set<T: FieldValue>(slot: &mut T, raw: Raw<'_>) -> Result<Value, String> {
        *slot = parse_raw(raw)?;
        Ok(slot.to_json())
    }
    match option {
        "max_retries" => set(&mut options.max_retries, raw),
        "retry_for" => set(&mut options.retry_for, raw),
        "running_concurrency" => set(&mut options.running_concurrency, raw),
        "registration_concurrency" => set(&mut options.registration_concurrency, raw),
        "key_arguments" => set(&mut options.key_arguments, raw),
        "on_diff_non_key_args_raise" => set(&mut options.on_diff_non_key_args_raise, raw),
        "reroute_on_concurrency_control" => set(&mut options.reroute_on_concurrency_control, raw),
        "parallel_batch_size" => set(&mut options.parallel_batch_size, raw),
        _ => Err(format!(
            "unknown task option (known options: {})",
            TASK_OPTION_NAMES.join(", ")
        )),
    }
}

// ---------------------------------------------------------------------------
// Layers
// ---------------------------------------------------------------------------

/// One field value given by a layer.
#[derive(Debug)]
struct Setting {
    field: &'static ConfigField,
    /// Given at the top level for a section field: loses to the section value.
    top_level: bool,
    value: RawValue,
    source: ConfigSource,
}

/// One task option given by a layer.
#[derive(Debug)]
struct TaskSetting {
    task_id: String,
    option: String,
    value: RawValue,
    source: ConfigSource,
}

/// Everything one layer gives.
#[derive(Debug, Default)]
struct Layer {
    settings: Vec<Setting>,
    tasks: Vec<TaskSetting>,
}

/// The setting of a top-level key `name`: a global field, or the field of
/// that name in the one section that has it.
fn top_level_setting(
    name: &str,
    value: RawValue,
    source: &ConfigSource,
) -> Result<Setting, ConfigError> {
    match find_top_level(name) {
        Ok(field) => Ok(Setting {
            field,
            top_level: !field.section.is_empty(),
            value,
            source: source.clone(),
        }),
        Err(TopLevelMiss::Ambiguous(sections)) => Err(config_error(
            source,
            name,
            ambiguous_reason(name, &sections),
        )),
        Err(TopLevelMiss::Unknown) => Err(config_error(source, name, unknown_key_reason(""))),
    }
}

/// The setting of `section.name`, in a known section.
fn section_setting(
    section: &str,
    name: &str,
    value: RawValue,
    source: &ConfigSource,
) -> Result<Setting, ConfigError> {
    match find_field(section, name) {
        Some(field) => Ok(Setting {
            field,
            top_level: false,
            value,
            source: source.clone(),
        }),
        None => Err(config_error(
            source,
            format!("{section}.{name}"),
            unknown_key_reason(section),
        )),
    }
}

fn config_error(
    source: &ConfigSource,
    key: impl Into<String>,
    reason: impl Into<String>,
) -> ConfigError {
    ConfigError {
        source: source.clone(),
        key: key.into(),
        reason: reason.into(),
    }
}

impl Layer {
    /// A layer from a file's (or code's) tree.
    fn from_tree(tree: &Value, source: &ConfigSource) -> Result<Layer, ConfigError> {
        let mut layer = Layer::default();
        let root = match tree {
            Value::Null => return Ok(layer),
            Value::Object(map) => map,
            other => {
                return Err(config_error(
                    source,
                    FILE_KEY,
                    expected("a table of settings at the top level", json_got(other)),
                ))
            }
        };
        for (key, value) in root {
            let lkey = key.to_ascii_lowercase();
            if lkey == TASK_SECTION {
                let tasks = value.as_object().ok_or_else(|| {
                    config_error(
                        source,
                        TASK_SECTION,
                        expected("a table of tasks (task id → options)", json_got(value)),
                    )
                })?;
                for (task_id, options) in tasks {
                    let task_id = normalize_task_id(task_id);
                    let options = options.as_object().ok_or_else(|| {
                        config_error(
                            source,
                            format!("{TASK_SECTION}.{task_id}"),
                            expected("a table of task options", json_got(options)),
                        )
                    })?;
                    for (option, v) in options {
                        layer.tasks.push(TaskSetting {
                            task_id: task_id.clone(),
                            option: option.to_ascii_lowercase(),
                            value: RawValue::Json(v.clone()),
                            source: source.clone(),
                        });
                    }
                }
            } else if SECTIONS.contains(&lkey.as_str()) {
                let fields = value.as_object().ok_or_else(|| {
                    config_error(
                        source,
                        lkey.as_str(),
                        expected(&format!("a table of [{lkey}] settings"), json_got(value)),
                    )
                })?;
                for (name, v) in fields {
                    let lname = name.to_ascii_lowercase();
                    let setting =
                        section_setting(&lkey, &lname, RawValue::Json(v.clone()), source)?;
                    layer.settings.push(setting);
                }
            } else {
                // a table under an unknown name reads as an unknown section
                if value.is_object() && matches!(find_top_level(&lkey), Err(TopLevelMiss::Unknown))
                {
                    return Err(config_error(
                        source,
                        lkey.as_str(),
                        unknown_section_reason(&lkey),
                    ));
                }
                let setting = top_level_setting(&lkey, RawValue::Json(value.clone()), source)?;
                layer.settings.push(setting);
            }
        }
        Ok(layer)
    }

    /// A layer from a configuration file; `origin` says why it is read.
    fn from_file(path: &Path, origin: &str) -> Result<Layer, ConfigError> {
        let source = ConfigSource::File(path.display().to_string());
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        if !matches!(ext.as_str(), "toml" | "yaml" | "yml" | "json") {
            return Err(config_error(
                &source,
                FILE_KEY,
                format!(
                    "unsupported configuration file type ({origin}): expected a .toml, .yaml, .yml or .json file"
                ),
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            config_error(
                &source,
                FILE_KEY,
                format!("cannot read the configuration file ({origin}): {e}"),
            )
        })?;
        let parsed: Result<Value, String> = match ext.as_str() {
            "toml" => toml::from_str::<Value>(&text).map_err(|e| e.to_string()),
            "json" => serde_json::from_str::<Value>(&text).map_err(|e| e.to_string()),
            _ => serde_yaml::from_str::<Value>(&text).map_err(|e| e.to_string()),
        };
        let tree = parsed.map_err(|e| {
            config_error(
                &source,
                FILE_KEY,
                format!(
                    "cannot parse the {} file ({origin}): {}",
                    if ext == "yml" { "yaml" } else { ext.as_str() },
                    e.trim_end()
                ),
            )
        })?;
        Layer::from_tree(&tree, &source)
    }

    /// A layer from `PYNENC__*` environment variables (others are ignored).
    fn from_env(vars: &[(String, String)]) -> Result<Layer, ConfigError> {
        let mut layer = Layer::default();
        let mut vars: Vec<&(String, String)> = vars
            .iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        vars.sort();
        for (name, value) in vars {
            let rest = &name[ENV_PREFIX.len()..];
            if rest.eq_ignore_ascii_case("FILEPATH") {
                continue;
            }
            let source = ConfigSource::Env(name.clone());
            let task_prefix = "TASK__";
            if rest.len() > task_prefix.len()
                && rest[..task_prefix.len()].eq_ignore_ascii_case(task_prefix)
            {
                let spec = &rest[task_prefix.len()..];
                match spec.rsplit_once("__") {
                    Some((task_id, option)) if !task_id.is_empty() && !option.is_empty() => {
                        layer.tasks.push(TaskSetting {
                            task_id: normalize_task_id(task_id),
                            option: option.to_ascii_lowercase(),
                            value: RawValue::Env(value.clone()),
                            source,
                        });
                    }
                    _ => {
                        return Err(config_error(
                            &source,
                            format!("{TASK_SECTION}.{spec}"),
                            format!(
                                "a task option is set as {ENV_PREFIX}TASK__<task id>__<OPTION>"
                            ),
                        ))
                    }
                }
                continue;
            }
            let parts: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            let setting = match parts.as_slice() {
                [name] => top_level_setting(name, RawValue::Env(value.clone()), &source)?,
                [section, name] if SECTIONS.contains(&section.as_str()) => {
                    section_setting(section, name, RawValue::Env(value.clone()), &source)?
                }
                [section, name] => {
                    return Err(config_error(
                        &source,
                        format!("{section}.{name}"),
                        unknown_section_reason(section),
                    ))
                }
                _ => {
                    return Err(config_error(
                        &source,
                        parts.join("."),
                        format!(
                            "unknown key: expected {ENV_PREFIX}<FIELD>, {ENV_PREFIX}<SECTION>__<FIELD> or {ENV_PREFIX}TASK__<task id>__<OPTION>"
                        ),
                    ))
                }
            };
            layer.settings.push(setting);
        }
        Ok(layer)
    }

    /// A layer from values set in code.
    fn from_code(values: &[(String, Value)]) -> Result<Layer, ConfigError> {
        let source = ConfigSource::Code;
        let mut layer = Layer::default();
        for (key, value) in values {
            let task_prefix = "task.";
            if key.len() > task_prefix.len()
                && key[..task_prefix.len()].eq_ignore_ascii_case(task_prefix)
            {
                let spec = &key[task_prefix.len()..];
                match spec.rsplit_once('.') {
                    Some((task_id, option)) if !task_id.is_empty() && !option.is_empty() => {
                        layer.tasks.push(TaskSetting {
                            task_id: normalize_task_id(task_id),
                            option: option.to_ascii_lowercase(),
                            value: RawValue::Json(value.clone()),
                            source: source.clone(),
                        });
                    }
                    _ => {
                        return Err(config_error(
                            &source,
                            key.as_str(),
                            "a task option is set as task.<task id>.<option>",
                        ))
                    }
                }
                continue;
            }
            let lkey = key.to_ascii_lowercase();
            let setting = match lkey.split_once('.') {
                Some((section, name)) if SECTIONS.contains(&section) => {
                    section_setting(section, name, RawValue::Json(value.clone()), &source)?
                }
                Some((section, _)) => {
                    return Err(config_error(
                        &source,
                        lkey.as_str(),
                        unknown_section_reason(section),
                    ))
                }
                None => top_level_setting(&lkey, RawValue::Json(value.clone()), &source)?,
            };
            layer.settings.push(setting);
        }
        Ok(layer)
    }
}

// ---------------------------------------------------------------------------
// Loader
// ---------------------------------------------------------------------------

/// Builds a [`PynencConfig`] from every layer.
///
/// ```no_run
/// # use pynenc::conf::ConfigLoader;
/// let config = ConfigLoader::new()
///     .file("pynenc.yaml")
///     .value("app_id", "billing")
///     .value("task.my_crate::jobs::add.max_retries", 3)
///     .load()?;
/// # Ok::<(), pynenc::exceptions::ConfigError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct ConfigLoader {
    files: Vec<PathBuf>,
    values: Vec<(String, Value)>,
    env: Option<Vec<(String, String)>>,
    project_dir: Option<PathBuf>,
}

impl ConfigLoader {
    /// A loader that, at [`ConfigLoader::load`], reads the process environment
    /// and `pynenc.toml` in the current directory.
    pub fn new() -> Self {
        ConfigLoader::default()
    }

    /// Adds a configuration file (`.toml`, `.yaml`, `.yml` or `.json`): the
    /// "file given in code" layer. Several files are applied in the order given.
    /// A missing or unreadable file is an error at load.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.files.push(path.into());
        self
    }

    /// Sets a value in code (the highest layer). `key` is `field`,
    /// `section.field` or `task.<task id>.<option>`; later calls win.
    pub fn value(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.values.push((key.to_string(), value.into()));
        self
    }

    /// Uses these variables instead of the process environment (for tests
    /// and embedding); only `PYNENC__*` variables are read.
    pub fn env_vars(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        self.env = Some(vars.into_iter().collect());
        self
    }

    /// Where `pynenc.toml` is looked for (default: the current directory).
    pub fn project_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.project_dir = Some(dir.into());
        self
    }

    /// Applies every layer and checks the result.
    pub fn load(self) -> Result<PynencConfig, ConfigError> {
        let env: Vec<(String, String)> = match self.env {
            Some(vars) => vars,
            None => std::env::vars_os()
                .filter_map(|(k, v)| {
                    let k = k.into_string().ok()?;
                    k.starts_with(ENV_PREFIX)
                        .then(|| (k, v.to_string_lossy().into_owned()))
                })
                .collect(),
        };
        let mut config = PynencConfig::default();

        let project_dir = self.project_dir.or_else(|| std::env::current_dir().ok());
        if let Some(dir) = project_dir {
            let path = dir.join(PROJECT_FILE_NAME);
            if path.is_file() {
                config.apply(Layer::from_file(&path, "project file")?)?;
            }
        }
        for path in &self.files {
            config.apply(Layer::from_file(path, "given in code")?)?;
        }
        let filepath = env
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(FILEPATH_ENV_VAR))
            .map(|(_, v)| v.trim())
            .next_back();
        if let Some(path) = filepath.filter(|p| !p.is_empty()) {
            config.apply(Layer::from_file(
                Path::new(path),
                &format!("named by environment variable {FILEPATH_ENV_VAR}"),
            )?)?;
        }
        config.apply(Layer::from_env(&env)?)?;
        config.apply(Layer::from_code(&self.values)?)?;
        config.finish()?;
        Ok(config)
    }
}

// ---------------------------------------------------------------------------
// PynencConfig
// ---------------------------------------------------------------------------

impl PynencConfig {
    /// Loads the configuration from the process environment, `./pynenc.toml`
    /// and `PYNENC__FILEPATH`: `ConfigLoader::new().load()`.
    pub fn load() -> Result<PynencConfig, ConfigError> {
        ConfigLoader::new().load()
    }

    /// Every configuration field with its kind and documentation, in table order.
    pub fn fields() -> &'static [ConfigField] {
        FIELDS
    }

    /// Where the value of `key` came from: `runner.max_parallel_slots`,
    /// `app_id`, `max_parallel_slots` (unique field name) or
    /// `task.<task id>.<option>`. `None` for an unknown key or a task option
    /// that is not configured.
    pub fn source_of(&self, key: &str) -> Option<&ConfigSource> {
        if let Some(spec) = key.strip_prefix("task.") {
            let (task_id, option) = spec.rsplit_once('.')?;
            return self
                .task_overrides
                .get(&normalize_task_id(task_id))?
                .get(option)
                .map(|(_, source)| source);
        }
        let field = find_key(key)?;
        Some(self.sources.get(&field.key()).unwrap_or(&DEFAULT_SOURCE))
    }

    /// The effective configuration, one line per field, global fields first
    /// then by section, then the per-task overrides:
    /// `runner.max_parallel_slots = 8    (environment variable PYNENC__RUNNER__MAX_PARALLEL_SLOTS)`.
    /// Secrets (passwords) are shown as `***`.
    pub fn describe(&self) -> String {
        let mut fields: Vec<&ConfigField> = FIELDS.iter().collect();
        fields.sort_by_key(|f| (!f.section.is_empty(), f.section));
        let mut out = String::new();
        for field in fields {
            let mut value = field_value(self, field);
            if field.secret {
                value = mask_secret(&value);
            }
            let source = self.sources.get(&field.key()).unwrap_or(&DEFAULT_SOURCE);
            out.push_str(&format!("{} = {value}    ({source})\n", field.key()));
        }
        for (task_id, options) in &self.task_overrides {
            for (option, (value, source)) in options {
                out.push_str(&format!(
                    "{TASK_SECTION}.{}.{option} = {value}    ({source})\n",
                    quote(task_id)
                ));
            }
        }
        out
    }

    /// Every effective value as `(key, value)`, task overrides as
    /// `task.<task id>.<option>`: feeding them to [`ConfigLoader::value`]
    /// rebuilds the same configuration (used to configure child processes).
    pub fn effective_values(&self) -> Vec<(String, Value)> {
        let mut out: Vec<(String, Value)> = FIELDS
            .iter()
            .map(|f| (f.key(), field_value(self, f)))
            .collect();
        for (task_id, options) in &self.task_overrides {
            for (option, (value, _)) in options {
                out.push((task_key(task_id, option), value.clone()));
            }
        }
        out
    }

    /// The options of task `task_id`: the per-task overrides of the
    /// configuration applied on top of `base` (its `#[task]` options), then
    /// checked against its parameters with [`TaskOptions::validate`].
    ///
    /// A bad value is a [`PynencError::InvalidTaskOptions`] naming the task,
    /// the option and where the value came from.
    pub fn task_options(
        &self,
        task_id: &str,
        params: &[&str],
        base: TaskOptions,
    ) -> Result<TaskOptions, PynencError> {
        let mut options = base;
        let overrides = self.task_overrides.get(&normalize_task_id(task_id));
        if let Some(overrides) = overrides {
            for (option, (value, source)) in overrides {
                apply_task_option(&mut options, option, Raw::Json(value)).map_err(|reason| {
                    PynencError::InvalidTaskOptions {
                        task_id: task_id.to_string(),
                        option: option.clone(),
                        message: format!("from {source}: {reason}"),
                    }
                })?;
            }
        }
        options.validate(task_id, params).map_err(|err| match err {
            PynencError::InvalidTaskOptions {
                task_id,
                option,
                message,
            } => {
                let message = match overrides.and_then(|o| o.get(&option)) {
                    Some((_, source)) => format!("{message} (value from {source})"),
                    None => message,
                };
                PynencError::InvalidTaskOptions {
                    task_id,
                    option,
                    message,
                }
            }
            other => other,
        })?;
        Ok(options)
    }

    /// The task ids that have overrides in the configuration, so the app can
    /// warn about ids that name no registered task.
    pub fn task_ids_configured(&self) -> Vec<String> {
        self.task_overrides.keys().cloned().collect()
    }

    /// `runner.max_parallel_slots`, with 0 (auto) resolved to 8 per CPU core.
    pub fn effective_max_parallel_slots(&self) -> usize {
        match self.runner.max_parallel_slots {
            0 => 8 * available_cpus(),
            n => n,
        }
    }

    /// `runner.max_processes`, with 0 resolved to the number of CPUs (and
    /// never below `runner.min_processes`).
    pub fn effective_max_processes(&self) -> usize {
        match self.runner.max_processes {
            0 => available_cpus().max(self.runner.min_processes),
            n => n,
        }
    }

    /// Applies one layer: top-level values first, so that section values of
    /// the same layer win.
    fn apply(&mut self, mut layer: Layer) -> Result<(), ConfigError> {
        layer.settings.sort_by_key(|s| !s.top_level);
        for setting in &layer.settings {
            let key = setting.field.key();
            set_field(self, setting.field, setting.value.as_raw())
                .map_err(|reason| config_error(&setting.source, key.as_str(), reason))?;
            self.sources.insert(key, setting.source.clone());
        }
        for task in layer.tasks {
            let key = task_key(&task.task_id, &task.option);
            let mut scratch = TaskOptions::default();
            let value = apply_task_option(&mut scratch, &task.option, task.value.as_raw())
                .map_err(|reason| config_error(&task.source, key, reason))?;
            self.task_overrides
                .entry(task.task_id)
                .or_default()
                .insert(task.option, (value, task.source));
        }
        Ok(())
    }

    /// Fills in the values derived from others.
    fn resolve_derived(&mut self) {
        if let ArgumentPrintMode::Truncated(_) = self.print_arguments {
            self.print_arguments = ArgumentPrintMode::Truncated(self.truncate_arguments_length);
        }
    }

    /// Derived values and the checks that involve several fields.
    fn finish(&mut self) -> Result<(), ConfigError> {
        self.resolve_derived();
        if self.sqlite.poll_min_ms > self.sqlite.poll_max_ms {
            return Err(self.pair_error(
                "sqlite.poll_min_ms",
                "sqlite.poll_max_ms",
                format!(
                    "poll_min_ms ({}) must not exceed poll_max_ms ({})",
                    self.sqlite.poll_min_ms, self.sqlite.poll_max_ms
                ),
            ));
        }
        if self.runner.max_processes != 0 && self.runner.min_processes > self.runner.max_processes {
            return Err(self.pair_error(
                "runner.min_processes",
                "runner.max_processes",
                format!(
                    "min_processes ({}) must not exceed max_processes ({}; 0 means the number of CPUs)",
                    self.runner.min_processes, self.runner.max_processes
                ),
            ));
        }
        Ok(())
    }

    /// An error about two fields that do not fit together, reported on the
    /// one that was set (the first if both were).
    fn pair_error(&self, first: &str, second: &str, reason: String) -> ConfigError {
        let (key, source) = match (self.sources.get(first), self.sources.get(second)) {
            (Some(s), _) => (first, s.clone()),
            (None, Some(s)) => (second, s.clone()),
            (None, None) => (first, ConfigSource::Default),
        };
        config_error(&source, key, reason)
    }
}

fn available_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A loader isolated from the process: empty environment, project dir `dir`.
    fn loader(dir: &Path) -> ConfigLoader {
        ConfigLoader::new().project_dir(dir).env_vars(Vec::new())
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, text).unwrap();
        path
    }

    fn file_source(path: &Path) -> ConfigSource {
        ConfigSource::File(path.display().to_string())
    }

    fn env_source(var: &str) -> ConfigSource {
        ConfigSource::Env(var.to_string())
    }

    #[test]
    fn defaults_have_default_sources() {
        let dir = tempfile::tempdir().unwrap();
        let config = loader(dir.path()).load().unwrap();
        assert_eq!(config, PynencConfig::default());
        assert_eq!(config.app_id, "pynenc");
        assert!(!config.dev_mode_force_sync_tasks);
        assert_eq!(config.serializer, Serializer::Json);
        assert_eq!(config.backend, "memory");
        assert_eq!(config.print_arguments, ArgumentPrintMode::Truncated(32));
        assert_eq!(config.truncate_arguments_length, 32);
        assert_eq!(config.max_argument_bytes, 536_870_912);
        assert!(config.orchestrator.cycle_control);
        assert!(config.orchestrator.blocking_control);
        assert_eq!(config.orchestrator.auto_final_invocation_purge_hours, 24.0);
        assert_eq!(config.orchestrator.auto_purge_interval_seconds, 60.0);
        assert_eq!(config.orchestrator.max_pending_seconds, 10.0);
        assert_eq!(config.runner.max_parallel_slots, 0);
        assert_eq!(config.runner.shutdown_grace_seconds, 5.0);
        assert_eq!(config.runner.heartbeat_interval_seconds, 0.5);
        assert_eq!(config.runner.runner_dead_after_seconds, 2.0);
        assert_eq!(config.runner.recovery_interval_seconds, 0.5);
        assert_eq!(config.runner.kind, "thread");
        assert_eq!(config.runner.min_processes, 1);
        assert_eq!(config.runner.max_processes, 0);
        assert_eq!(config.sqlite.sqlite_path, "pynenc.db");
        assert_eq!(config.sqlite.busy_timeout_ms, 5000);
        assert_eq!(config.sqlite.poll_min_ms, 1);
        assert_eq!(config.sqlite.poll_max_ms, 50);
        assert_eq!(config.redis.redis_url, "");
        assert_eq!(config.redis.redis_host, "localhost");
        assert_eq!(config.redis.redis_port, 6379);
        assert_eq!(config.redis.redis_db, 0);
        assert_eq!(config.redis.redis_username, "");
        assert_eq!(config.redis.redis_password, "");
        assert_eq!(config.redis.redis_key_prefix, "__pynenc__");
        assert_eq!(config.redis.redis_pool_size, 4);
        for field in PynencConfig::fields() {
            assert_eq!(
                config.source_of(&field.key()),
                Some(&ConfigSource::Default),
                "{}",
                field.key()
            );
            assert!(!field.doc.trim().is_empty(), "{} has no doc", field.key());
        }
        assert_eq!(
            config.source_of("max_parallel_slots"),
            Some(&ConfigSource::Default)
        );
        assert_eq!(config.source_of("runner.nope"), None);
        assert_eq!(config.source_of("task.a::b.max_retries"), None);
        assert!(config.task_ids_configured().is_empty());
        let slots = config.effective_max_parallel_slots();
        assert!(slots >= 8, "{slots}");
        assert_eq!(slots % 8, 0);
        assert!(config.effective_max_processes() >= 1);
    }

    #[test]
    fn precedence_across_all_layers() {
        let dir = tempfile::tempdir().unwrap();
        let key = "runner.max_parallel_slots";

        // 1. defaults
        let config = loader(dir.path()).load().unwrap();
        assert_eq!(config.runner.max_parallel_slots, 0);
        assert_eq!(config.source_of(key), Some(&ConfigSource::Default));

        // 2. project file
        let project = write(
            dir.path(),
            "pynenc.toml",
            "app_id = \"project\"\n[runner]\nmax_parallel_slots = 1\n",
        );
        let config = loader(dir.path()).load().unwrap();
        assert_eq!(config.runner.max_parallel_slots, 1);
        assert_eq!(config.source_of(key), Some(&file_source(&project)));
        assert_eq!(config.app_id, "project");

        // 3. file given in code
        let code_file = write(
            dir.path(),
            "code.yaml",
            "runner:\n  max_parallel_slots: 2\n",
        );
        let base = || loader(dir.path()).file(&code_file);
        let config = base().load().unwrap();
        assert_eq!(config.runner.max_parallel_slots, 2);
        assert_eq!(config.source_of(key), Some(&file_source(&code_file)));
        // lower layers still give the keys nobody overrides
        assert_eq!(config.app_id, "project");
        assert_eq!(config.source_of("app_id"), Some(&file_source(&project)));

        // 4. file named by PYNENC__FILEPATH
        let env_file = write(
            dir.path(),
            "env.json",
            r#"{"runner": {"max_parallel_slots": 3}}"#,
        );
        let filepath = env_file.display().to_string();
        let mut vars = env(&[("PYNENC__FILEPATH", &filepath)]);
        let config = base().env_vars(vars.clone()).load().unwrap();
        assert_eq!(config.runner.max_parallel_slots, 3);
        assert_eq!(config.source_of(key), Some(&file_source(&env_file)));

        // 5. environment variable
        vars.push(("PYNENC__RUNNER__MAX_PARALLEL_SLOTS".into(), "4".into()));
        let config = base().env_vars(vars.clone()).load().unwrap();
        assert_eq!(config.runner.max_parallel_slots, 4);
        assert_eq!(
            config.source_of(key),
            Some(&env_source("PYNENC__RUNNER__MAX_PARALLEL_SLOTS"))
        );

        // 6. value set in code
        let config = base().env_vars(vars).value(key, 5).load().unwrap();
        assert_eq!(config.runner.max_parallel_slots, 5);
        assert_eq!(config.source_of(key), Some(&ConfigSource::Code));
        assert_eq!(config.app_id, "project");
    }

    #[test]
    fn later_files_given_in_code_win() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(
            dir.path(),
            "a.toml",
            "app_id = \"a\"\nbackend = \"sqlite\"\n",
        );
        let b = write(dir.path(), "b.toml", "app_id = \"b\"\n");
        let config = loader(dir.path()).file(&a).file(&b).load().unwrap();
        assert_eq!(config.app_id, "b");
        assert_eq!(config.backend, "sqlite");
        assert_eq!(config.source_of("app_id"), Some(&file_source(&b)));
        assert_eq!(config.source_of("backend"), Some(&file_source(&a)));
    }

    #[test]
    fn section_beats_top_level_in_same_layer() {
        let dir = tempfile::tempdir().unwrap();
        // top level alone applies to the section
        let f = write(
            dir.path(),
            "top.toml",
            "max_parallel_slots = 3\nredis_port = 7000\n",
        );
        let config = loader(dir.path()).file(&f).load().unwrap();
        assert_eq!(config.runner.max_parallel_slots, 3);
        assert_eq!(config.redis.redis_port, 7000);
        assert_eq!(
            config.source_of("runner.max_parallel_slots"),
            Some(&file_source(&f))
        );

        // file: section wins whatever the order
        let f = write(
            dir.path(),
            "both.toml",
            "max_parallel_slots = 3\n[runner]\nmax_parallel_slots = 5\n",
        );
        let config = loader(dir.path()).file(&f).load().unwrap();
        assert_eq!(config.runner.max_parallel_slots, 5);
        let f = write(
            dir.path(),
            "both.json",
            r#"{"runner": {"max_parallel_slots": 5}, "max_parallel_slots": 3}"#,
        );
        let config = loader(dir.path()).file(&f).load().unwrap();
        assert_eq!(config.runner.max_parallel_slots, 5);

        // environment
        let config = loader(dir.path())
            .env_vars(env(&[
                ("PYNENC__RUNNER__MAX_PARALLEL_SLOTS", "7"),
                ("PYNENC__MAX_PARALLEL_SLOTS", "2"),
            ]))
            .load()
            .unwrap();
        assert_eq!(config.runner.max_parallel_slots, 7);
        assert_eq!(
            config.source_of("runner.max_parallel_slots"),
            Some(&env_source("PYNENC__RUNNER__MAX_PARALLEL_SLOTS"))
        );
        let config = loader(dir.path())
            .env_vars(env(&[("PYNENC__MAX_PARALLEL_SLOTS", "2")]))
            .load()
            .unwrap();
        assert_eq!(config.runner.max_parallel_slots, 2);
        assert_eq!(
            config.source_of("runner.max_parallel_slots"),
            Some(&env_source("PYNENC__MAX_PARALLEL_SLOTS"))
        );

        // code
        let config = loader(dir.path())
            .value("runner.max_parallel_slots", 9)
            .value("max_parallel_slots", 1)
            .load()
            .unwrap();
        assert_eq!(config.runner.max_parallel_slots, 9);

        // but a higher layer's top-level value beats a lower layer's section value
        let f = write(dir.path(), "sec.toml", "[runner]\nmax_parallel_slots = 5\n");
        let config = loader(dir.path())
            .file(&f)
            .value("max_parallel_slots", 1)
            .load()
            .unwrap();
        assert_eq!(config.runner.max_parallel_slots, 1);
    }

    #[test]
    fn env_values_are_parsed_into_field_types() {
        let dir = tempfile::tempdir().unwrap();
        for (text, expected) in [
            ("true", true),
            ("1", true),
            ("yes", true),
            ("YES", true),
            ("false", false),
            ("0", false),
            ("no", false),
        ] {
            let config = loader(dir.path())
                .env_vars(env(&[("PYNENC__DEV_MODE_FORCE_SYNC_TASKS", text)]))
                .load()
                .unwrap();
            assert_eq!(config.dev_mode_force_sync_tasks, expected, "{text}");
        }
        let config = loader(dir.path())
            .env_vars(env(&[
                ("PYNENC__APP_ID", "env-app"),
                ("PYNENC__SERIALIZER", "msgpack"),
                ("PYNENC__PRINT_ARGUMENTS", "truncated"),
                ("PYNENC__TRUNCATE_ARGUMENTS_LENGTH", "10"),
                ("PYNENC__ORCHESTRATOR__CYCLE_CONTROL", "no"),
                ("PYNENC__ORCHESTRATOR__MAX_PENDING_SECONDS", "2.5"),
                ("PYNENC__runner__Max_Parallel_Slots", " 12 "),
                ("PYNENC__REDIS__REDIS_PORT", "6380"),
                ("PYNENC__SQLITE__SQLITE_PATH", "/tmp/x.db"),
                ("OTHER_VAR", "ignored"),
            ]))
            .load()
            .unwrap();
        assert_eq!(config.app_id, "env-app");
        assert_eq!(config.serializer, Serializer::MessagePack);
        assert_eq!(config.print_arguments, ArgumentPrintMode::Truncated(10));
        assert!(!config.orchestrator.cycle_control);
        assert_eq!(config.orchestrator.max_pending_seconds, 2.5);
        assert_eq!(config.runner.max_parallel_slots, 12);
        assert_eq!(config.redis.redis_port, 6380);
        assert_eq!(config.sqlite.sqlite_path, "/tmp/x.db");
        assert_eq!(
            config.source_of("runner.max_parallel_slots"),
            Some(&env_source("PYNENC__runner__Max_Parallel_Slots"))
        );

        // lists: comma separated and JSON arrays
        let config = loader(dir.path())
            .env_vars(env(&[
                ("PYNENC__TASK__m::t__RETRY_FOR", "Timeout, IoError"),
                ("PYNENC__TASK__m::t__KEY_ARGUMENTS", r#"["x", "y"]"#),
            ]))
            .load()
            .unwrap();
        let options = config
            .task_options("m::t", &["x", "y"], TaskOptions::default())
            .unwrap();
        assert_eq!(options.retry_for, vec!["Timeout", "IoError"]);
        assert_eq!(options.key_arguments, vec!["x", "y"]);
    }

    #[test]
    fn task_env_vars_accept_colons_and_dots() {
        let dir = tempfile::tempdir().unwrap();
        let config = loader(dir.path())
            .env_vars(env(&[
                ("PYNENC__TASK__my_crate::jobs::add__MAX_RETRIES", "3"),
                ("PYNENC__TASK__my_crate.jobs.mul__max_retries", "4"),
                (
                    "PYNENC__TASK__my_crate.jobs.mul__RUNNING_CONCURRENCY",
                    "task",
                ),
                (
                    "PYNENC__TASK__my_crate.jobs.mul__REROUTE_ON_CONCURRENCY_CONTROL",
                    "0",
                ),
            ]))
            .load()
            .unwrap();
        assert_eq!(
            config.task_ids_configured(),
            vec![
                "my_crate::jobs::add".to_string(),
                "my_crate::jobs::mul".to_string()
            ]
        );
        let add = config
            .task_options("my_crate::jobs::add", &["a", "b"], TaskOptions::default())
            .unwrap();
        assert_eq!(add.max_retries, 3);
        let mul = config
            .task_options("my_crate::jobs::mul", &["a", "b"], TaskOptions::default())
            .unwrap();
        assert_eq!(mul.max_retries, 4);
        assert_eq!(mul.running_concurrency, ConcurrencyControl::Task);
        assert!(!mul.reroute_on_concurrency_control);
        assert_eq!(
            config.source_of("task.my_crate::jobs::mul.max_retries"),
            Some(&env_source("PYNENC__TASK__my_crate.jobs.mul__max_retries"))
        );
        assert_eq!(
            config.source_of("task.my_crate.jobs.add.max_retries"),
            Some(&env_source(
                "PYNENC__TASK__my_crate::jobs::add__MAX_RETRIES"
            ))
        );
    }

    #[test]
    fn yaml_and_json_files() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = write(
            dir.path(),
            "conf.yml",
            "app_id: yaml-app\nbackend: redis\norchestrator:\n  blocking_control: false\n  auto_final_invocation_purge_hours: 2\nredis:\n  redis_db: 3\ntask:\n  \"m::t\":\n    max_retries: 2\n    retry_for: [A, B]\n",
        );
        let config = loader(dir.path()).file(&yaml).load().unwrap();
        assert_eq!(config.app_id, "yaml-app");
        assert_eq!(config.backend, "redis");
        assert!(!config.orchestrator.blocking_control);
        assert_eq!(config.orchestrator.auto_final_invocation_purge_hours, 2.0);
        assert_eq!(config.redis.redis_db, 3);
        let options = config
            .task_options("m::t", &[], TaskOptions::default())
            .unwrap();
        assert_eq!(options.max_retries, 2);
        assert_eq!(options.retry_for, vec!["A", "B"]);
        assert_eq!(
            config.source_of("redis.redis_db"),
            Some(&file_source(&yaml))
        );

        let json = write(
            dir.path(),
            "conf.json",
            r#"{"app_id": "json-app", "serializer": "message_pack", "sqlite": {"poll_max_ms": 100},
                "task": {"m.t": {"parallel_batch_size": 7}}}"#,
        );
        let config = loader(dir.path()).file(&json).load().unwrap();
        assert_eq!(config.app_id, "json-app");
        assert_eq!(config.serializer, Serializer::MessagePack);
        assert_eq!(config.sqlite.poll_max_ms, 100);
        let options = config
            .task_options("m::t", &[], TaskOptions::default())
            .unwrap();
        assert_eq!(options.parallel_batch_size, 7);

        // an empty YAML file is an empty layer
        let empty = write(dir.path(), "empty.yaml", "");
        assert_eq!(
            loader(dir.path()).file(&empty).load().unwrap(),
            PynencConfig::default()
        );
    }

    fn load_err(l: ConfigLoader) -> ConfigError {
        l.load().expect_err("expected a configuration error")
    }

    #[test]
    fn unknown_key_in_file_names_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(dir.path(), "c.toml", "[runner]\nmax_paralel_slots = 3\n");
        let err = load_err(loader(dir.path()).file(&f));
        assert_eq!(err.source, file_source(&f));
        assert_eq!(err.key, "runner.max_paralel_slots");
        assert!(err.reason.contains("unknown key"), "{err}");
        assert!(
            err.reason.contains("max_parallel_slots"),
            "lists known keys: {err}"
        );
        let text = err.to_string();
        assert!(text.contains(&f.display().to_string()) && text.contains("max_paralel_slots"));

        let f = write(dir.path(), "g.toml", "app_name = \"x\"\n");
        let err = load_err(loader(dir.path()).file(&f));
        assert_eq!(err.key, "app_name");
        assert!(err.reason.contains("unknown key"), "{err}");

        // in the environment and in code too
        let err = load_err(loader(dir.path()).env_vars(env(&[("PYNENC__RUNNER__SLOTS", "3")])));
        assert_eq!(err.source, env_source("PYNENC__RUNNER__SLOTS"));
        assert_eq!(err.key, "runner.slots");
        let err = load_err(loader(dir.path()).env_vars(env(&[("PYNENC__NOPE", "3")])));
        assert_eq!(err.key, "nope");
        let err = load_err(loader(dir.path()).value("runner.nope", 1));
        assert_eq!(
            (err.source, err.key.as_str()),
            (ConfigSource::Code, "runner.nope")
        );
    }

    #[test]
    fn wrong_type_in_env_names_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let var = "PYNENC__RUNNER__MAX_PARALLEL_SLOTS";
        let err = load_err(loader(dir.path()).env_vars(env(&[(var, "abc")])));
        assert_eq!(err.source, env_source(var));
        assert_eq!(err.key, "runner.max_parallel_slots");
        assert_eq!(err.reason, "expected an unsigned integer, got \"abc\"");
        assert!(err.to_string().contains(var));

        let err = load_err(loader(dir.path()).env_vars(env(&[(var, "-3")])));
        assert!(err.reason.contains("unsigned"), "{err}");
        let err = load_err(
            loader(dir.path()).env_vars(env(&[("PYNENC__DEV_MODE_FORCE_SYNC_TASKS", "maybe")])),
        );
        assert!(err.reason.contains("boolean"), "{err}");
        let err =
            load_err(loader(dir.path()).env_vars(env(&[("PYNENC__REDIS__REDIS_PORT", "70000")])));
        assert!(err.reason.contains("65535"), "{err}");
        let err = load_err(
            loader(dir.path()).env_vars(env(&[("PYNENC__RUNNER__SHUTDOWN_GRACE_SECONDS", "soon")])),
        );
        assert!(err.reason.contains("expected a number"), "{err}");
    }

    #[test]
    fn wrong_type_in_file_and_code() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(
            dir.path(),
            "c.toml",
            "[runner]\nmax_parallel_slots = \"abc\"\n",
        );
        let err = load_err(loader(dir.path()).file(&f));
        assert_eq!(err.key, "runner.max_parallel_slots");
        assert_eq!(
            err.reason,
            "expected an unsigned integer, got string \"abc\""
        );
        let err = load_err(loader(dir.path()).value("runner.max_parallel_slots", -2));
        assert_eq!(err.source, ConfigSource::Code);
        assert_eq!(err.reason, "expected an unsigned integer, got number -2");
        let err = load_err(loader(dir.path()).value("orchestrator.max_pending_seconds", -1.0));
        assert!(err.reason.contains("greater than 0"), "{err}");
        let err = load_err(loader(dir.path()).value("app_id", 3));
        assert_eq!(err.reason, "expected a string, got number 3");
        let f = write(dir.path(), "d.toml", "runner = 3\n");
        let err = load_err(loader(dir.path()).file(&f));
        assert_eq!(err.key, "runner");
    }

    #[test]
    fn unparsable_file_names_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(dir.path(), "bad.toml", "app_id = \"x\"\n[runner\nmax = 1\n");
        let err = load_err(loader(dir.path()).file(&f));
        assert_eq!(err.source, file_source(&f));
        assert_eq!(err.key, "(file)");
        assert!(err.reason.contains("line 2"), "{err}");
        assert!(err.to_string().contains("bad.toml"));

        // the project file too
        let sub = dir.path().join("proj");
        fs::create_dir(&sub).unwrap();
        let p = write(&sub, "pynenc.toml", "app_id = \n");
        let err = load_err(loader(&sub));
        assert_eq!(err.source, file_source(&p));
        assert_eq!(err.key, "(file)");

        let f = write(dir.path(), "bad.yaml", "a: [1, 2\n");
        let err = load_err(loader(dir.path()).file(&f));
        assert_eq!((err.source, err.key.as_str()), (file_source(&f), "(file)"));
        assert!(err.reason.contains("yaml"), "{}", err.reason);
        let f = write(dir.path(), "bad.json", "{\"app_id\": }");
        let err = load_err(loader(dir.path()).file(&f));
        assert!(err.reason.contains("line 1"), "{}", err.reason);
        let f = write(dir.path(), "list.json", "[1, 2]");
        let err = load_err(loader(dir.path()).file(&f));
        assert_eq!(err.key, "(file)");
    }

    #[test]
    fn missing_or_unsupported_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.toml");
        let err = load_err(loader(dir.path()).file(&missing));
        assert_eq!(err.source, file_source(&missing));
        assert_eq!(err.key, "(file)");
        assert!(err.reason.contains("cannot read"), "{err}");
        assert!(err.reason.contains("given in code"), "{err}");

        let missing = dir.path().join("gone.yaml");
        let err = load_err(
            loader(dir.path())
                .env_vars(env(&[("PYNENC__FILEPATH", &missing.display().to_string())])),
        );
        assert_eq!(err.source, file_source(&missing));
        assert!(err.reason.contains("PYNENC__FILEPATH"), "{err}");

        let ini = write(dir.path(), "conf.ini", "app_id = x\n");
        let err = load_err(loader(dir.path()).file(&ini));
        assert!(err.reason.contains("unsupported"), "{err}");

        // no project file is fine
        assert!(loader(dir.path()).load().is_ok());
    }

    #[test]
    fn unknown_section() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(dir.path(), "c.toml", "[runer]\nmax_parallel_slots = 3\n");
        let err = load_err(loader(dir.path()).file(&f));
        assert_eq!(err.source, file_source(&f));
        assert_eq!(err.key, "runer");
        assert!(err.reason.contains("unknown section 'runer'"), "{err}");
        assert!(err.reason.contains("runner"), "lists known sections: {err}");

        let var = "PYNENC__RUNER__MAX_PARALLEL_SLOTS";
        let err = load_err(loader(dir.path()).env_vars(env(&[(var, "3")])));
        assert_eq!(err.source, env_source(var));
        assert_eq!(err.key, "runer.max_parallel_slots");
        assert!(err.reason.contains("unknown section"), "{err}");

        let err = load_err(loader(dir.path()).value("runer.max_parallel_slots", 3));
        assert!(err.reason.contains("unknown section"), "{err}");
    }

    #[test]
    fn bad_serializer_and_backend_names() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(dir.path(), "c.toml", "serializer = \"pickle\"\n");
        let err = load_err(loader(dir.path()).file(&f));
        assert_eq!(err.key, "serializer");
        assert!(
            err.reason.contains("serializer name") && err.reason.contains("pickle"),
            "{err}"
        );

        let err = load_err(loader(dir.path()).env_vars(env(&[("PYNENC__BACKEND", "mongo")])));
        assert_eq!(err.source, env_source("PYNENC__BACKEND"));
        assert_eq!(err.key, "backend");
        assert_eq!(
            err.reason,
            "expected one of memory, sqlite, redis, got \"mongo\""
        );

        let err = load_err(loader(dir.path()).value("print_arguments", "some"));
        assert_eq!(err.key, "print_arguments");
        assert!(
            err.reason.contains("full, keys, truncated, hidden"),
            "{err}"
        );
    }

    #[test]
    fn fields_that_must_fit_together() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_err(loader(dir.path()).value("sqlite.poll_min_ms", 100));
        assert_eq!(
            (err.source, err.key.as_str()),
            (ConfigSource::Code, "sqlite.poll_min_ms")
        );
        let err = load_err(loader(dir.path()).env_vars(env(&[
            ("PYNENC__RUNNER__MAX_PROCESSES", "1"),
            ("PYNENC__MIN_PROCESSES", "2"),
        ])));
        assert_eq!(err.key, "runner.min_processes");
        assert!(loader(dir.path())
            .value("runner.min_processes", 3)
            .load()
            .is_ok());
    }

    #[test]
    fn task_options_from_file_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(
            dir.path(),
            "pynenc.toml",
            "[task.\"my_crate::jobs::add\"]\nmax_retries = 3\nretry_for = [\"Timeout\"]\nregistration_concurrency = \"keys\"\nkey_arguments = [\"a\"]\non_diff_non_key_args_raise = true\n",
        );
        let config = loader(dir.path())
            .env_vars(env(&[(
                "PYNENC__TASK__my_crate::jobs::add__MAX_RETRIES",
                "5",
            )]))
            .load()
            .unwrap();
        let base = TaskOptions {
            parallel_batch_size: 10,
            ..TaskOptions::default()
        };
        let options = config
            .task_options("my_crate::jobs::add", &["a", "b"], base.clone())
            .unwrap();
        assert_eq!(options.max_retries, 5);
        assert_eq!(options.retry_for, vec!["Timeout"]);
        assert_eq!(options.registration_concurrency, ConcurrencyControl::Keys);
        assert_eq!(options.key_arguments, vec!["a"]);
        assert!(options.on_diff_non_key_args_raise);
        assert_eq!(
            options.parallel_batch_size, 10,
            "base kept where not overridden"
        );
        assert_eq!(
            config.source_of("task.my_crate::jobs::add.max_retries"),
            Some(&env_source(
                "PYNENC__TASK__my_crate::jobs::add__MAX_RETRIES"
            ))
        );
        assert_eq!(
            config.source_of("task.my_crate::jobs::add.retry_for"),
            Some(&file_source(&f))
        );
        // a task without overrides keeps its base
        assert_eq!(
            config.task_options("other::t", &[], base.clone()).unwrap(),
            base
        );
        // code wins over env
        let config = loader(dir.path())
            .env_vars(env(&[(
                "PYNENC__TASK__my_crate::jobs::add__MAX_RETRIES",
                "5",
            )]))
            .value("task.my_crate::jobs::add.max_retries", 9)
            .load()
            .unwrap();
        let options = config
            .task_options("my_crate::jobs::add", &["a"], TaskOptions::default())
            .unwrap();
        assert_eq!(options.max_retries, 9);
    }

    #[test]
    fn bad_task_option_is_an_error_naming_task_option_and_source() {
        let dir = tempfile::tempdir().unwrap();
        // detected at load
        let var = "PYNENC__TASK__m::t__MAX_RETRIES";
        let err = load_err(loader(dir.path()).env_vars(env(&[(var, "x")])));
        assert_eq!(err.source, env_source(var));
        assert_eq!(err.key, "task.m::t.max_retries");
        assert_eq!(err.reason, "expected an unsigned integer, got \"x\"");
        let err =
            load_err(loader(dir.path()).env_vars(env(&[("PYNENC__TASK__m::t__MAX_RETRIEZ", "1")])));
        assert_eq!(err.key, "task.m::t.max_retriez");
        assert!(err.reason.contains("unknown task option"), "{err}");
        let f = write(
            dir.path(),
            "c.toml",
            "[task.\"m::t\"]\nrunning_concurrency = \"sometimes\"\n",
        );
        let err = load_err(loader(dir.path()).file(&f));
        assert_eq!(
            (err.source, err.key.as_str()),
            (file_source(&f), "task.m::t.running_concurrency")
        );
        let err = load_err(loader(dir.path()).value("task.m::t.key_arguments", 3));
        assert_eq!(err.key, "task.m::t.key_arguments");

        // found by task_options (a stored value that does not fit)
        let mut config = PynencConfig::default();
        config
            .task_overrides
            .entry("m::t".into())
            .or_default()
            .insert("max_retries".into(), (Value::from("x"), env_source(var)));
        let err = config
            .task_options("m::t", &[], TaskOptions::default())
            .unwrap_err();
        match &err {
            PynencError::InvalidTaskOptions {
                task_id,
                option,
                message,
            } => {
                assert_eq!(task_id, "m::t");
                assert_eq!(option, "max_retries");
                assert_eq!(
                    message,
                    "from environment variable PYNENC__TASK__m::t__MAX_RETRIES: expected an unsigned integer, got string \"x\""
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn task_options_validation_failure_propagates() {
        let dir = tempfile::tempdir().unwrap();
        let config = loader(dir.path())
            .value("task.m::t.key_arguments", "nope")
            .value("task.m::t.running_concurrency", "keys")
            .load()
            .unwrap();
        let err = config
            .task_options("m::t", &["x", "y"], TaskOptions::default())
            .unwrap_err();
        match &err {
            PynencError::InvalidTaskOptions {
                task_id,
                option,
                message,
            } => {
                assert_eq!(task_id, "m::t");
                assert_eq!(option, "key_arguments");
                assert!(message.contains("'nope' is not a parameter"), "{message}");
                assert!(message.contains("value from code"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
        let config = loader(dir.path())
            .value("task.m::t.parallel_batch_size", 0)
            .load()
            .unwrap();
        let err = config
            .task_options("m::t", &[], TaskOptions::default())
            .unwrap_err();
        assert!(
            matches!(err, PynencError::InvalidTaskOptions { ref option, .. } if option == "parallel_batch_size")
        );
    }

    #[test]
    fn every_task_option_name_is_configurable() {
        for name in TASK_OPTION_NAMES {
            let sample = match *name {
                "retry_for" | "key_arguments" => "a,b",
                "running_concurrency" | "registration_concurrency" => "task",
                "on_diff_non_key_args_raise" | "reroute_on_concurrency_control" => "true",
                _ => "2",
            };
            let mut options = TaskOptions::default();
            apply_task_option(&mut options, name, Raw::Env(sample))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn describe_lists_every_field_with_its_source() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(
            dir.path(),
            "c.toml",
            "app_id = \"described\"\n[sqlite]\npoll_max_ms = 70\n",
        );
        let config = loader(dir.path())
            .file(&f)
            .env_vars(env(&[
                ("PYNENC__RUNNER__MAX_PARALLEL_SLOTS", "8"),
                ("PYNENC__TASK__m.t__MAX_RETRIES", "2"),
                ("PYNENC__REDIS__REDIS_PASSWORD", "hunter2"),
                (
                    "PYNENC__REDIS__REDIS_URL",
                    "rediss://bob:s3cret@db.example:6380/1",
                ),
            ]))
            .value("orchestrator.cycle_control", false)
            .load()
            .unwrap();
        let text = config.describe();
        assert_eq!(text.lines().count(), FIELDS.len() + 1, "{text}");
        for field in PynencConfig::fields() {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("{} = ", field.key()))),
                "{} missing in\n{text}",
                field.key()
            );
        }
        assert!(text.contains(
            "runner.max_parallel_slots = 8    (environment variable PYNENC__RUNNER__MAX_PARALLEL_SLOTS)"
        ), "{text}");
        assert!(
            text.contains(&format!("app_id = \"described\"    (file {})", f.display())),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "sqlite.poll_max_ms = 70    (file {})",
                f.display()
            )),
            "{text}"
        );
        assert!(
            text.contains("orchestrator.cycle_control = false    (code)"),
            "{text}"
        );
        assert!(text.contains("backend = \"memory\"    (default)"), "{text}");
        assert!(
            text.contains("orchestrator.max_pending_seconds = 10.0    (default)"),
            "{text}"
        );
        assert!(text.contains(
            "task.\"m::t\".max_retries = 2    (environment variable PYNENC__TASK__m.t__MAX_RETRIES)"
        ), "{text}");
        // global first, then sections in order
        let first = text.lines().next().unwrap();
        assert!(first.starts_with("app_id = "), "{text}");
        let pos = |k: &str| text.find(&format!("\n{k}.")).unwrap();
        assert!(
            pos("orchestrator") < pos("redis")
                && pos("redis") < pos("runner")
                && pos("runner") < pos("sqlite")
        );
        // secrets stay secret, in describe and in Debug
        assert!(
            !text.contains("hunter2") && !text.contains("s3cret"),
            "{text}"
        );
        assert!(text.contains("redis.redis_password = \"***\""), "{text}");
        assert!(
            text.contains("redis.redis_url = \"rediss://bob:***@db.example:6380/1\""),
            "{text}"
        );
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("s3cret"),
            "{debug}"
        );
        assert_eq!(config.redis.redis_password, "hunter2");
    }

    #[test]
    fn url_masking() {
        assert_eq!(
            mask_url("redis://localhost:6379/0").unwrap(),
            "redis://localhost:6379/0"
        );
        assert_eq!(mask_url("redis://:pw@h:1").unwrap(), "redis://:***@h:1");
        assert_eq!(mask_url("redis://user@h").unwrap(), "redis://user@h");
        assert_eq!(mask_url("not a url"), None);
    }
}
