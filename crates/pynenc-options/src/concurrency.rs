//! Concurrency control modes and their names.

use crate::named::named_choices;

named_choices! {
    /// How concurrency control groups the invocations of a task.
    pub enum ConcurrencyControl {
        /// No control (default).
        #[default]
        Disabled = "disabled" | "none" | "off",
        /// One invocation per task.
        Task = "task",
        /// One invocation per task and arguments.
        Arguments = "arguments" | "args",
        /// One invocation per task and values of `key_arguments`.
        Keys = "keys" | "key",
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
