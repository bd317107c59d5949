//! Arguments as the monitor shows them: the app's `print_arguments` mode,
//! and every argument (or JSON object key inside a value) whose name
//! matches a redaction pattern replaced by [`REDACTED`] — on every page and
//! in every API answer.

use pynenc_model::arguments::display_value;
use pynenc_model::{ArgumentPrintMode, Arguments, DifferingArgument, Serializer};
use serde_json::Value;

/// What a redacted value is shown as.
pub const REDACTED: &str = "<redacted>";

/// The most characters of one argument value shown.
pub const MAX_ARGUMENT_CHARS: usize = 10_000;

/// The largest value read for redaction; a larger one is not shown.
pub const MAX_SCANNED_BYTES: usize = 1 << 20;

/// The most characters of a result shown.
pub const MAX_RESULT_CHARS: usize = 100_000;

/// Redacts by name.
#[derive(Debug, Clone)]
pub(crate) struct Redactor {
    patterns: Vec<String>,
}

/// One argument as shown.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ShownArgument {
    /// The parameter name.
    pub name: String,
    /// The value as shown (redacted, truncated or hidden as configured).
    pub value: String,
}

impl Redactor {
    pub(crate) fn new(patterns: &[String]) -> Self {
        Redactor {
            patterns: patterns
                .iter()
                .map(|p| p.trim().to_lowercase())
                .filter(|p| !p.is_empty())
                .collect(),
        }
    }

    /// The patterns, for the configuration page.
    pub(crate) fn describe(&self) -> String {
        self.patterns.join(", ")
    }

    /// Whether values under `name` are hidden.
    pub(crate) fn hides(&self, name: &str) -> bool {
        let lower = name.to_lowercase();
        self.patterns.iter().any(|p| lower.contains(p.as_str()))
    }

    /// The arguments of a call, as shown.
    pub(crate) fn arguments(
        &self,
        args: &Arguments,
        mode: ArgumentPrintMode,
        serializer: Serializer,
    ) -> Vec<ShownArgument> {
        args.serialized()
            .map(|(name, text)| ShownArgument {
                name: name.to_string(),
                value: self.argument(name, text, mode, serializer),
            })
            .collect()
    }

    /// One argument's serialized value `text`, as shown.
    pub(crate) fn argument(
        &self,
        name: &str,
        text: &str,
        mode: ArgumentPrintMode,
        serializer: Serializer,
    ) -> String {
        if self.hides(name) {
            return REDACTED.to_string();
        }
        match mode {
            ArgumentPrintMode::Hidden => "<hidden>".to_string(),
            ArgumentPrintMode::Keys => "…".to_string(),
            ArgumentPrintMode::Full => truncate(
                &self.value(&display_value(text, serializer)),
                MAX_ARGUMENT_CHARS,
            ),
            ArgumentPrintMode::Truncated(n) => truncate(
                &self.value(&display_value(text, serializer)),
                n.min(MAX_ARGUMENT_CHARS),
            ),
        }
    }

    /// The arguments of a reusing call that differ from the invocation's,
    /// as shown (one it did not have, or too large to have been kept, says so).
    pub(crate) fn differing(
        &self,
        differing: &[DifferingArgument],
        mode: ArgumentPrintMode,
        serializer: Serializer,
    ) -> Vec<ShownArgument> {
        differing
            .iter()
            .map(|d| ShownArgument {
                name: d.name.clone(),
                value: match &d.value {
                    Some(text) => self.argument(&d.name, text, mode, serializer),
                    None if d.size == 0 => "(not given)".to_string(),
                    None if self.hides(&d.name) => REDACTED.to_string(),
                    None => format!("<{} bytes, not kept>", d.size),
                },
            })
            .collect()
    }

    /// A value as text with the keys of JSON objects inside it redacted
    /// (one over [`MAX_SCANNED_BYTES`] is not shown at all: it is not read
    /// for secrets).
    pub(crate) fn value(&self, text: &str) -> String {
        if text.len() > MAX_SCANNED_BYTES {
            return format!("<{} bytes, not shown>", text.len());
        }
        match serde_json::from_str::<Value>(text) {
            Ok(mut v) => {
                if self.scrub(&mut v) {
                    v.to_string()
                } else {
                    text.to_string()
                }
            }
            Err(_) => text.to_string(),
        }
    }

    /// Redacts in place; whether anything was.
    fn scrub(&self, v: &mut Value) -> bool {
        match v {
            Value::Object(map) => {
                let mut any = false;
                for (k, inner) in map.iter_mut() {
                    if self.hides(k) {
                        *inner = Value::String(REDACTED.to_string());
                        any = true;
                    } else {
                        any |= self.scrub(inner);
                    }
                }
                any
            }
            Value::Array(items) => items.iter_mut().fold(false, |a, i| self.scrub(i) | a),
            _ => false,
        }
    }
}

/// At most `n` characters of `s`, with `…` when cut.
pub(crate) fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_nested_keys_are_redacted() {
        let r = Redactor::new(&["password".into(), "token".into()]);
        assert!(r.hides("db_PASSWORD"));
        assert!(!r.hides("user"));
        let shown = r.value(r#"{"user":"a","api_token":"xyz","inner":[{"password":"p"}]}"#);
        assert!(
            !shown.contains("xyz") && !shown.contains("\"p\""),
            "{shown}"
        );
        assert!(shown.contains(REDACTED));
        assert_eq!(r.value("42"), "42");
    }
}
