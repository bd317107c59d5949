//! The rules that tie options to each other and to the task's parameters,
//! checked by `#[task]` at compile time and by the runtime after
//! configuration is applied.

use std::fmt;

use crate::{ConcurrencyControl, RegistrationScopeName};

/// An option value that breaks a rule: which option, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionProblem {
    /// The option at fault.
    pub option: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for OptionProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "option `{}`: {}", self.option, self.message)
    }
}

impl std::error::Error for OptionProblem {}

fn problem(option: &'static str, message: String) -> OptionProblem {
    OptionProblem { option, message }
}

fn parameters(params: &[&str]) -> String {
    if params.is_empty() {
        "the task has no parameters".to_string()
    } else {
        format!("parameters: {}", params.join(", "))
    }
}

/// `key_arguments` names parameters of the task, each once.
pub fn check_key_arguments<S: AsRef<str>>(
    keys: &[S],
    params: &[&str],
) -> Result<(), OptionProblem> {
    check_param_names("key_arguments", keys, params)
}

/// The option `option` (of kind parameter names) names parameters of the
/// task, each once.
pub fn check_param_names<S: AsRef<str>>(
    option: &'static str,
    names: &[S],
    params: &[&str],
) -> Result<(), OptionProblem> {
    for (i, name) in names.iter().enumerate() {
        let name = name.as_ref();
        if !params.contains(&name) {
            return Err(problem(
                option,
                format!("`{name}` is not a parameter ({})", parameters(params)),
            ));
        }
        if names[..i].iter().any(|k| k.as_ref() == name) {
            return Err(problem(
                option,
                format!("`{name}` is listed more than once"),
            ));
        }
    }
    Ok(())
}

/// `Keys` concurrency (running or registration) needs at least one key
/// argument. The problem is reported on the first option that asks for keys.
pub fn check_keys_have_arguments(
    running: ConcurrencyControl,
    registration: ConcurrencyControl,
    has_keys: bool,
    params: &[&str],
) -> Result<(), OptionProblem> {
    let asking = if running == ConcurrencyControl::Keys {
        "running_concurrency"
    } else if registration == ConcurrencyControl::Keys {
        "registration_concurrency"
    } else {
        return Ok(());
    };
    if has_keys {
        return Ok(());
    }
    Err(problem(
        asking,
        format!(
            "concurrency control `Keys` needs `key_arguments = [...]` naming at least one parameter ({})",
            parameters(params)
        ),
    ))
}

/// `parallel_batch_size` is at least 1.
pub fn check_batch_size(size: u64) -> Result<(), OptionProblem> {
    if size == 0 {
        return Err(problem("parallel_batch_size", "must be at least 1".into()));
    }
    Ok(())
}

/// A `registration_scope` other than `queued` needs registration
/// concurrency (without it nothing is reused, so the scope does nothing),
/// and `cached` needs a `registration_cache_seconds` of at least 1 (a
/// success reused for no time at all is never reused).
///
/// The first problem is reported on `registration_scope`, the second on
/// `registration_cache_seconds`.
pub fn check_registration_scope(
    scope: RegistrationScopeName,
    registration: ConcurrencyControl,
    cache_seconds: u32,
) -> Result<(), OptionProblem> {
    if scope == RegistrationScopeName::Queued {
        return Ok(());
    }
    if registration == ConcurrencyControl::Disabled {
        return Err(problem(
            "registration_scope",
            format!(
                "scope `{scope}` does nothing without registration concurrency: \
                 set `registration_concurrency` to task, arguments or keys"
            ),
        ));
    }
    if scope == RegistrationScopeName::Cached && cache_seconds == 0 {
        return Err(problem(
            "registration_cache_seconds",
            "must be at least 1 with `registration_scope = cached` \
             (a success reused for 0 seconds is never reused)"
                .into(),
        ));
    }
    Ok(())
}

/// No error kind of `retry_for` is empty.
pub fn check_retry_for<S: AsRef<str>>(kinds: &[S]) -> Result<(), OptionProblem> {
    if kinds.iter().any(|k| k.as_ref().trim().is_empty()) {
        return Err(problem("retry_for", "an error kind cannot be empty".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_arguments_must_be_parameters_listed_once() {
        assert!(check_key_arguments(&["x"], &["x", "y"]).is_ok());
        let err = check_key_arguments(&["z"], &["x", "y"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "option `key_arguments`: `z` is not a parameter (parameters: x, y)"
        );
        let err = check_key_arguments(&["x"], &[]).unwrap_err();
        assert!(err.message.contains("the task has no parameters"), "{err}");
        let err = check_key_arguments(&["x", "x"], &["x"]).unwrap_err();
        assert_eq!(err.message, "`x` is listed more than once");
    }

    #[test]
    fn keys_concurrency_needs_keys() {
        use ConcurrencyControl::*;
        assert!(check_keys_have_arguments(Keys, Disabled, true, &["x"]).is_ok());
        assert!(check_keys_have_arguments(Task, Arguments, false, &["x"]).is_ok());
        let err = check_keys_have_arguments(Disabled, Keys, false, &["x"]).unwrap_err();
        assert_eq!(err.option, "registration_concurrency");
        let err = check_keys_have_arguments(Keys, Keys, false, &["x"]).unwrap_err();
        assert_eq!(err.option, "running_concurrency");
        assert!(err.message.contains("(parameters: x)"), "{err}");
    }

    #[test]
    fn registration_scope_needs_registration_concurrency_and_a_cache_time() {
        use ConcurrencyControl::*;
        use RegistrationScopeName::*;
        // the default scope is fine with anything, even a cache time of 0
        assert!(check_registration_scope(Queued, Disabled, 0).is_ok());
        assert!(check_registration_scope(Queued, Task, 0).is_ok());
        assert!(check_registration_scope(Active, Arguments, 0).is_ok());
        assert!(check_registration_scope(Cached, Keys, 1).is_ok());
        for scope in [Active, Cached] {
            let err = check_registration_scope(scope, Disabled, 300).unwrap_err();
            assert_eq!(err.option, "registration_scope");
            assert_eq!(
                err.to_string(),
                format!(
                    "option `registration_scope`: scope `{scope}` does nothing without \
                     registration concurrency: set `registration_concurrency` to task, \
                     arguments or keys"
                )
            );
        }
        let err = check_registration_scope(Cached, Task, 0).unwrap_err();
        assert_eq!(err.option, "registration_cache_seconds");
        assert!(err.message.starts_with("must be at least 1"), "{err}");
        // without registration concurrency, that is the problem reported
        let err = check_registration_scope(Cached, Disabled, 0).unwrap_err();
        assert_eq!(err.option, "registration_scope");
    }

    #[test]
    fn sizes_and_kinds() {
        assert!(check_batch_size(1).is_ok());
        assert_eq!(
            check_batch_size(0).unwrap_err().message,
            "must be at least 1"
        );
        assert!(check_retry_for(&["Timeout"]).is_ok());
        assert!(check_retry_for(&[" "]).is_err());
    }
}
