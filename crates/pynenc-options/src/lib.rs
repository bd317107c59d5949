//! The task-option vocabulary of pynenc, written once.
//!
//! `#[pynenc::task(...)]` (a proc-macro crate, which cannot depend on the
//! runtime), the configuration (`[task."<task id>"]` sections and
//! `PYNENC__TASK__…` variables) and the runtime checks all read the option
//! names, their kinds, their defaults and the rules that tie them to a
//! task's parameters from here, so the three never disagree.
//!
//! | option | kind | default |
//! |---|---|---|
//! | `max_retries` | count | 0 |
//! | `retry_for` | error kinds | `[]` |
//! | `running_concurrency` | concurrency control | `disabled` |
//! | `registration_concurrency` | concurrency control | `disabled` |
//! | `key_arguments` | parameter names | `[]` |
//! | `on_diff_non_key_args_raise` | flag | `false` |
//! | `registration_scope` | registration scope | `queued` |
//! | `registration_cache_seconds` | seconds | 300 |
//! | `reroute_on_concurrency_control` | flag | `true` |
//! | `parallel_batch_size` | batch size (at least 1) | 100 |
//! | `inline_arguments` | parameter names | `[]` |
//! | `data_store_min_size_bytes` | count | 0 (the app's `data_store.min_size_bytes`) |
//! | `workflow` | flag | `false` |
#![deny(missing_docs)]

mod check;
mod concurrency;
mod named;
mod scope;
mod spec;

pub use check::{
    check_batch_size, check_key_arguments, check_keys_have_arguments, check_param_names,
    check_registration_scope, check_retry_for, OptionProblem,
};
pub use concurrency::ConcurrencyControl;
pub use scope::RegistrationScopeName;
pub use spec::TaskOptionsSpec;

/// What kind of value an option takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionKind {
    /// A non-negative count that fits a `u32` (`max_retries`).
    Count,
    /// A positive size that fits a `usize` (`parallel_batch_size`).
    BatchSize,
    /// `true` or `false`.
    Flag,
    /// A list of error kinds (non-empty strings).
    ErrorKinds,
    /// A list of the task's parameter names.
    ParamNames,
    /// A [`ConcurrencyControl`] mode.
    Concurrency,
    /// A [`RegistrationScopeName`] (`registration_scope`).
    Scope,
    /// A whole number of seconds that fits a `u32`
    /// (`registration_cache_seconds`).
    Seconds,
}

impl OptionKind {
    /// What a value of this kind looks like, for error messages.
    pub fn expected(self) -> &'static str {
        match self {
            OptionKind::Count => "an unsigned integer",
            OptionKind::BatchSize => "an unsigned integer of at least 1",
            OptionKind::Flag => "a boolean (true/false, 1/0, yes/no)",
            OptionKind::ErrorKinds | OptionKind::ParamNames => {
                "a list of strings (comma separated or a JSON array)"
            }
            OptionKind::Concurrency => ConcurrencyControl::EXPECTED,
            OptionKind::Scope => RegistrationScopeName::EXPECTED,
            OptionKind::Seconds => "a whole number of seconds (an unsigned integer)",
        }
    }
}

/// One task option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionDef {
    /// Its name, as written in `#[task(...)]` and in configuration; also the
    /// name of its field in [`TaskOptionsSpec`].
    pub name: &'static str,
    /// The kind of value it takes.
    pub kind: OptionKind,
    /// What it does.
    pub doc: &'static str,
}

/// Every task option, in the order they are documented.
pub const OPTIONS: &[OptionDef] = &[
    OptionDef {
        name: "max_retries",
        kind: OptionKind::Count,
        doc: "how many times a retriable error is retried",
    },
    OptionDef {
        name: "retry_for",
        kind: OptionKind::ErrorKinds,
        doc: "error kinds that are retried (the retry error always is)",
    },
    OptionDef {
        name: "running_concurrency",
        kind: OptionKind::Concurrency,
        doc: "concurrency control when picking invocations to run",
    },
    OptionDef {
        name: "registration_concurrency",
        kind: OptionKind::Concurrency,
        doc: "concurrency control when routing new calls",
    },
    OptionDef {
        name: "key_arguments",
        kind: OptionKind::ParamNames,
        doc: "the parameters identifying an invocation for `keys` concurrency",
    },
    OptionDef {
        name: "on_diff_non_key_args_raise",
        kind: OptionKind::Flag,
        doc: "raise instead of reusing a registered invocation whose other arguments differ",
    },
    OptionDef {
        name: "registration_scope",
        kind: OptionKind::Scope,
        doc: "which invocation registration concurrency reuses: `queued` (still registered), \
              `active` (also pending, running or paused) or `cached` (also a recent success)",
    },
    OptionDef {
        name: "registration_cache_seconds",
        kind: OptionKind::Seconds,
        doc: "how long a success is reused with `registration_scope = cached`",
    },
    OptionDef {
        name: "reroute_on_concurrency_control",
        kind: OptionKind::Flag,
        doc: "re-route an invocation held back by running concurrency instead of ending it",
    },
    OptionDef {
        name: "parallel_batch_size",
        kind: OptionKind::BatchSize,
        doc: "how many calls `parallelize` routes per batch",
    },
    OptionDef {
        name: "inline_arguments",
        kind: OptionKind::ParamNames,
        doc: "parameters whose values stay in the record whatever their size \
              (never in the data store)",
    },
    OptionDef {
        name: "data_store_min_size_bytes",
        kind: OptionKind::Count,
        doc: "arguments and results of this task longer than this many bytes go to the \
              data store (0: the app's `data_store.min_size_bytes`)",
    },
    OptionDef {
        name: "workflow",
        kind: OptionKind::Flag,
        doc: "a durable workflow: the calls it makes are steps, recorded once; when it runs \
              again (a retry, a runner lost) each step gives back what it recorded",
    },
];

/// The option called `name`, if there is one.
pub fn find(name: &str) -> Option<&'static OptionDef> {
    OPTIONS.iter().find(|o| o.name == name)
}

/// The option called `name`, or why there is none (naming the known options).
pub fn find_known(name: &str) -> Result<&'static OptionDef, String> {
    find(name).ok_or_else(|| format!("unknown task option (known options: {})", names()))
}

/// Every option name, comma separated (for error messages).
pub fn names() -> String {
    OPTIONS
        .iter()
        .map(|o| o.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_option_is_found_by_name_and_names_are_unique() {
        for o in OPTIONS {
            assert_eq!(find(o.name), Some(o));
        }
        let mut all: Vec<&str> = OPTIONS.iter().map(|o| o.name).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), OPTIONS.len());
        assert!(find("retries").is_none());
        assert!(names().starts_with("max_retries, retry_for,"));
    }

    #[test]
    fn every_option_is_in_the_documentation_table_with_an_expected_value() {
        let docs = include_str!("lib.rs");
        for o in OPTIONS {
            assert!(
                docs.contains(&format!("//! | `{}` |", o.name)),
                "{} missing from the table",
                o.name
            );
            assert!(!o.kind.expected().is_empty(), "{}", o.name);
            assert!(!o.doc.is_empty(), "{}", o.name);
        }
    }
}
