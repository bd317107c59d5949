//! Concurrency control modes and their names.

use std::fmt;

/// How concurrency control groups the invocations of a task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ConcurrencyControl {
    /// No control (default).
    #[default]
    Disabled,
    /// One invocation per task.
    Task,
    /// One invocation per task and arguments.
    Arguments,
    /// One invocation per task and values of `key_arguments`.
    Keys,
}

impl ConcurrencyControl {
    /// Every mode.
    pub const ALL: [ConcurrencyControl; 4] = [
        ConcurrencyControl::Disabled,
        ConcurrencyControl::Task,
        ConcurrencyControl::Arguments,
        ConcurrencyControl::Keys,
    ];

    /// What a mode looks like, for error messages.
    pub const EXPECTED: &'static str = "one of disabled, task, arguments, keys";

    /// Parses a mode name in any case: `disabled` (`none`, `off`), `task`,
    /// `arguments` (`args`) or `keys` (`key`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "disabled" | "none" | "off" => Some(ConcurrencyControl::Disabled),
            "task" => Some(ConcurrencyControl::Task),
            "arguments" | "args" => Some(ConcurrencyControl::Arguments),
            "keys" | "key" => Some(ConcurrencyControl::Keys),
            _ => None,
        }
    }

    /// The name as written in configuration (`disabled`, `task`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ConcurrencyControl::Disabled => "disabled",
            ConcurrencyControl::Task => "task",
            ConcurrencyControl::Arguments => "arguments",
            ConcurrencyControl::Keys => "keys",
        }
    }

    /// The name of the enum variant (`Disabled`, `Task`, ...), as generated code writes it.
    pub fn variant_name(self) -> &'static str {
        match self {
            ConcurrencyControl::Disabled => "Disabled",
            ConcurrencyControl::Task => "Task",
            ConcurrencyControl::Arguments => "Arguments",
            ConcurrencyControl::Keys => "Keys",
        }
    }
}

impl fmt::Display for ConcurrencyControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases() {
        for c in ConcurrencyControl::ALL {
            assert_eq!(ConcurrencyControl::from_name(c.name()), Some(c));
            assert_eq!(ConcurrencyControl::from_name(c.variant_name()), Some(c));
        }
        assert_eq!(
            ConcurrencyControl::from_name(" ARGS "),
            Some(ConcurrencyControl::Arguments)
        );
        assert_eq!(ConcurrencyControl::from_name("bogus"), None);
    }
}
