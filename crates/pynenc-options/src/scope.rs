//! Registration scopes and their names: which invocation registration
//! concurrency reuses for a new call with the same registration key.
//!
//! This is the option-level choice (`registration_scope`); the model turns
//! it, together with `registration_cache_seconds`, into
//! `pynenc_model::RegistrationScope`, which is what the backends see.

use std::fmt;

/// Which invocation with the same registration key a new call reuses
/// (`registration_scope`). Each scope reuses what the one before does, and
/// more.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum RegistrationScopeName {
    /// Only an invocation still queued (`REGISTERED`), as in Pynenc (default).
    #[default]
    Queued,
    /// Also one that is pending, running or paused (any that is neither
    /// final nor scheduled): a second caller joins the run in progress.
    Active,
    /// Also one that ended `SUCCESS` less than `registration_cache_seconds`
    /// ago: its result is returned without running again.
    Cached,
}

impl RegistrationScopeName {
    /// Every scope, from the narrowest.
    pub const ALL: [RegistrationScopeName; 3] = [
        RegistrationScopeName::Queued,
        RegistrationScopeName::Active,
        RegistrationScopeName::Cached,
    ];

    /// What a scope looks like, for error messages.
    pub const EXPECTED: &'static str = "one of queued, active, cached";

    /// Parses a scope name in any case: `queued` (`registered`), `active`
    /// or `cached`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "queued" | "registered" => Some(RegistrationScopeName::Queued),
            "active" => Some(RegistrationScopeName::Active),
            "cached" => Some(RegistrationScopeName::Cached),
            _ => None,
        }
    }

    /// The name as written in configuration (`queued`, `active`, `cached`).
    pub fn name(self) -> &'static str {
        match self {
            RegistrationScopeName::Queued => "queued",
            RegistrationScopeName::Active => "active",
            RegistrationScopeName::Cached => "cached",
        }
    }

    /// The name of the enum variant (`Queued`, ...), as generated code writes it.
    pub fn variant_name(self) -> &'static str {
        match self {
            RegistrationScopeName::Queued => "Queued",
            RegistrationScopeName::Active => "Active",
            RegistrationScopeName::Cached => "Cached",
        }
    }
}

impl fmt::Display for RegistrationScopeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
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
