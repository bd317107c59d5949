//! The two choices a configuration names by value: the backend and the
//! runner kind. Each is parsed once, when the configuration is loaded; an
//! unknown name is an error naming its source and the valid names.

use std::fmt;

use serde_json::Value;

use super::value::{expected, json_got, quote, FieldValue};

/// Defines a name-valued choice with its names, parsing and display.
macro_rules! named_choice {
    (
        $(#[$doc:meta])*
        $name:ident ($kind:literal) { $( $(#[$vdoc:meta])* $variant:ident = $text:literal ),+ $(,)? }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vdoc])* $variant, )+
        }

        impl $name {
            /// Every choice, in documentation order.
            pub const ALL: &'static [$name] = &[$( $name::$variant ),+];

            /// The name as written in configuration.
            pub fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }

            /// The choice of that name (exact, lower case).
            pub fn from_name(name: &str) -> Option<$name> {
                Self::ALL.iter().copied().find(|c| c.name() == name.trim())
            }

            /// The valid names, comma separated.
            pub fn names() -> String {
                Self::ALL.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FieldValue for $name {
            const KIND: &'static str = $kind;

            fn from_json(v: &Value) -> Result<Self, String> {
                match v.as_str() {
                    Some(s) => Self::from_env(s),
                    None => Err(expected(Self::KIND, json_got(v))),
                }
            }

            fn from_env(s: &str) -> Result<Self, String> {
                Self::from_name(s)
                    .ok_or_else(|| expected(Self::KIND, quote(s)))
            }

            fn to_json(&self) -> Value {
                Value::from(self.name())
            }
        }
    };
}

named_choice! {
    /// Where an app keeps its broker, orchestrator and state (`backend`).
    BackendKind ("one of memory, sqlite, redis, postgres") {
        /// In this process (the default): no server, no file.
        Memory = "memory",
        /// One SQLite file shared by the processes of one machine (feature `sqlite`).
        Sqlite = "sqlite",
        /// A Redis server shared by many machines (feature `redis`).
        Redis = "redis",
        /// A PostgreSQL database shared by many machines (feature `postgres`).
        Postgres = "postgres",
    }
}

named_choice! {
    /// The runner `app.runner()` builds (`runner.kind`).
    RunnerKind ("one of thread, process, persistent_process, multi_thread") {
        /// In-process: async bodies as tokio tasks, sync ones on blocking threads.
        Thread = "thread",
        /// A child process per invocation.
        Process = "process",
        /// A fixed pool of worker processes that run one body at a time.
        PersistentProcess = "persistent_process",
        /// Worker processes running threads, scaled by queue depth.
        MultiThread = "multi_thread",
    }
}

impl RunnerKind {
    /// Whether this kind runs invocations in other processes (which cannot
    /// see the in-memory backend).
    pub fn uses_processes(self) -> bool {
        self != RunnerKind::Thread
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_valid_ones() {
        for k in BackendKind::ALL {
            assert_eq!(BackendKind::from_env(k.name()), Ok(*k));
        }
        for k in RunnerKind::ALL {
            assert_eq!(RunnerKind::from_json(&Value::from(k.name())), Ok(*k));
        }
        assert_eq!(
            BackendKind::from_env("mongo").unwrap_err(),
            "expected one of memory, sqlite, redis, postgres, got \"mongo\""
        );
        assert_eq!(
            RunnerKind::from_env("threads").unwrap_err(),
            "expected one of thread, process, persistent_process, multi_thread, got \"threads\""
        );
        assert_eq!(
            BackendKind::KIND,
            format!("one of {}", BackendKind::names())
        );
        assert_eq!(RunnerKind::KIND, format!("one of {}", RunnerKind::names()));
        assert!(RunnerKind::Process.uses_processes());
        assert!(!RunnerKind::Thread.uses_processes());
    }
}
