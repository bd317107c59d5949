//! Reading configuration values: the types a field can have, how each is
//! read from a file, from code and from an environment variable, and the
//! checks applied once a value is read.

use std::fmt;

use serde_json::Value;

use pynenc_model::ArgumentPrintMode;
use pynenc_model::Serializer;

pub(crate) use pynenc_model::mask_url_password as mask_url;
pub(crate) use pynenc_model::secret::MASK;

/// A value as given by a layer: a typed tree (files, code) or a string (environment).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Raw<'a> {
    Json(&'a Value),
    Env(&'a str),
}

/// A value owned by a layer before it is applied.
#[derive(Debug, Clone)]
pub(crate) enum RawValue {
    Json(Value),
    Env(String),
}

impl RawValue {
    pub(crate) fn as_raw(&self) -> Raw<'_> {
        match self {
            RawValue::Json(v) => Raw::Json(v),
            RawValue::Env(s) => Raw::Env(s),
        }
    }
}

/// A type a configuration field (or task option) can have.
pub(crate) trait FieldValue: Sized {
    /// What is expected, for error messages: "an unsigned integer".
    const KIND: &'static str;
    /// Reads a value from a file or from code.
    fn from_json(v: &Value) -> Result<Self, String>;
    /// Reads a value from an environment variable.
    fn from_env(s: &str) -> Result<Self, String>;
    /// The value as written in a configuration file.
    fn to_json(&self) -> Value;
}

pub(crate) fn parse_raw<T: FieldValue>(raw: Raw<'_>) -> Result<T, String> {
    match raw {
        Raw::Json(v) => T::from_json(v),
        Raw::Env(s) => T::from_env(s),
    }
}

/// "expected {kind}, got {got}".
pub(crate) fn expected(kind: &str, got: impl fmt::Display) -> String {
    format!("expected {kind}, got {got}")
}

/// A short description of a JSON value for error messages: `string "abc"`.
pub(crate) fn json_got(v: &Value) -> String {
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
pub(crate) fn quote(s: &str) -> String {
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

pub(crate) fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// Reads a named value from a string (files, code and environment alike).
pub(crate) fn named_from_json<T>(
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

// Checks applied to a field's value after it is parsed.

pub(crate) fn non_empty(v: &str) -> Result<(), String> {
    if v.trim().is_empty() {
        Err("expected a non-empty string, got \"\"".into())
    } else {
        Ok(())
    }
}

pub(crate) fn non_negative(v: &f64) -> Result<(), String> {
    if *v >= 0.0 {
        Ok(())
    } else {
        Err(expected("a number of at least 0", v))
    }
}

pub(crate) fn positive(v: &f64) -> Result<(), String> {
    if *v > 0.0 {
        Ok(())
    } else {
        Err(expected("a number greater than 0", v))
    }
}

pub(crate) fn at_least_one<T: PartialEq + Default + fmt::Display>(v: &T) -> Result<(), String> {
    if *v == T::default() {
        Err(expected("an unsigned integer of at least 1", v))
    } else {
        Ok(())
    }
}

/// How a secret is shown: `***`, or a URL with its password replaced by `***`.
pub(crate) fn mask_secret(v: &Value) -> Value {
    match v.as_str() {
        Some("") => v.clone(),
        Some(s) => Value::from(mask_url(s).unwrap_or_else(|| MASK.to_string())),
        None => Value::from(MASK),
    }
}
