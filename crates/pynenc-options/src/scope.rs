//! Registration scopes and their names: which invocation registration
//! concurrency reuses for a new call with the same registration key.
//!
//! This is the option-level choice (`registration_scope`); the model turns
//! it, together with `registration_cache_seconds`, into
//! `pynenc_model::RegistrationScope`, which is what the backends see.

use crate::named::named_choices;

named_choices! {
    /// Which invocation with the same registration key a new call reuses
    /// (`registration_scope`). Each scope reuses what the one before does, and
    /// more.
    pub enum RegistrationScopeName {
        /// Only an invocation still queued (`REGISTERED`), as in Pynenc (default).
        #[default]
        Queued = "queued" | "registered",
        /// Also one that is pending, running or paused (any that is neither
        /// final nor scheduled): a second caller joins the run in progress.
        Active = "active",
        /// Also one that ended `SUCCESS` less than `registration_cache_seconds`
        /// ago: its result is returned without running again.
        Cached = "cached",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases() {
        for s in RegistrationScopeName::ALL {
            assert_eq!(RegistrationScopeName::from_name(s.name()), Some(s));
            assert_eq!(RegistrationScopeName::from_name(s.variant_name()), Some(s));
            assert_eq!(s.to_string(), s.name());
        }
        assert_eq!(
            RegistrationScopeName::from_name(" Registered "),
            Some(RegistrationScopeName::Queued)
        );
        assert_eq!(RegistrationScopeName::from_name("running"), None);
        assert_eq!(
            RegistrationScopeName::default(),
            RegistrationScopeName::Queued
        );
        let names: Vec<&str> = RegistrationScopeName::ALL
            .iter()
            .map(|s| s.name())
            .collect();
        assert_eq!(
            RegistrationScopeName::EXPECTED,
            format!("one of {}", names.join(", "))
        );
    }
}
