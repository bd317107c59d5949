//! Serializers turn argument values, results and errors into strings that
//! every backend can store.
//!
//! JSON is the default; MessagePack is the compact binary alternative (its
//! bytes are carried base64 encoded so every backend stores text).

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Whether a value was being written or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Turning a value into text.
    Serialize,
    /// Reading a value back from text.
    Deserialize,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Serialize => "serialize",
            Direction::Deserialize => "deserialize",
        })
    }
}

/// What the codec reported.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CodecError {
    /// The JSON codec failed.
    #[error("{0}")]
    Json(#[source] Arc<serde_json::Error>),
    /// The MessagePack encoder failed.
    #[error("{0}")]
    MessagePackEncode(#[source] Arc<rmp_serde::encode::Error>),
    /// The MessagePack decoder failed.
    #[error("{0}")]
    MessagePackDecode(#[source] Arc<rmp_serde::decode::Error>),
    /// The base64 text around a MessagePack value is invalid.
    #[error("{0}")]
    Base64(#[source] base64::DecodeError),
    /// The serialized text is not UTF-8.
    #[error("{0}")]
    Utf8(#[source] std::string::FromUtf8Error),
    /// The value cannot be serialized at all, and why.
    #[error("{0}")]
    Unsupported(String),
}

impl From<serde_json::Error> for CodecError {
    fn from(e: serde_json::Error) -> Self {
        CodecError::Json(Arc::new(e))
    }
}

/// A value that could not be serialized or deserialized: which value, and
/// what the codec said. The data it came from is unchanged; fix the value's
/// type (or the stored text) and try again.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot {direction} {what}: {source}")]
pub struct SerializationError {
    /// Writing or reading.
    pub direction: Direction,
    /// What was being converted (an argument of a task, a result, a record and its id).
    pub what: String,
    /// What the codec reported.
    #[source]
    pub source: CodecError,
}

impl SerializationError {
    /// Writing `what` failed with `source`.
    pub fn serialize(what: impl fmt::Display, source: impl Into<CodecError>) -> Self {
        SerializationError {
            direction: Direction::Serialize,
            what: what.to_string(),
            source: source.into(),
        }
    }

    /// Reading `what` failed with `source`.
    pub fn deserialize(what: impl fmt::Display, source: impl Into<CodecError>) -> Self {
        SerializationError {
            direction: Direction::Deserialize,
            what: what.to_string(),
            source: source.into(),
        }
    }
}

/// The result of a serializer.
pub type Result<T, E = SerializationError> = std::result::Result<T, E>;

/// The serializer of an app.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Serializer {
    /// JSON text (default): readable in every backend.
    #[default]
    Json,
    /// MessagePack, base64 encoded: smaller and faster for large structured values.
    #[serde(alias = "msgpack")]
    MessagePack,
}

impl Serializer {
    /// Parses a serializer name (`json`, `message_pack`, `msgpack`).
    pub fn from_name(name: &str) -> Option<Serializer> {
        match name.to_ascii_lowercase().as_str() {
            "json" | "jsonserializer" => Some(Serializer::Json),
            "message_pack" | "messagepack" | "msgpack" | "rmp" => Some(Serializer::MessagePack),
            _ => None,
        }
    }

    /// The serializer's name.
    pub fn name(self) -> &'static str {
        match self {
            Serializer::Json => "json",
            Serializer::MessagePack => "message_pack",
        }
    }

    /// Serializes `value`; `what` names it in the error (e.g. `argument x of
    /// task t`), and is only formatted if there is one.
    pub fn serialize<T: Serialize + ?Sized>(
        self,
        value: &T,
        what: impl std::fmt::Display,
    ) -> Result<String> {
        match self {
            Serializer::Json => {
                // most values are short: start small rather than at
                // serde_json's 128 bytes (cheaper to allocate and to keep)
                let mut text = Vec::with_capacity(32);
                serde_json::to_writer(&mut text, value)
                    .map_err(|e| SerializationError::serialize(&what, e))?;
                String::from_utf8(text)
                    .map_err(|e| SerializationError::serialize(&what, CodecError::Utf8(e)))
            }
            Serializer::MessagePack => {
                let bytes = rmp_serde::to_vec_named(value).map_err(|e| {
                    SerializationError::serialize(&what, CodecError::MessagePackEncode(Arc::new(e)))
                })?;
                Ok(base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes))
            }
        }
    }

    /// Deserializes `text`; `what` names it in the error (formatted only
    /// if there is one).
    pub fn deserialize<T: DeserializeOwned>(
        self,
        text: &str,
        what: impl std::fmt::Display,
    ) -> Result<T> {
        match self {
            Serializer::Json => {
                serde_json::from_str(text).map_err(|e| SerializationError::deserialize(&what, e))
            }
            Serializer::MessagePack => {
                let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(text.as_bytes())
                    .map_err(|e| SerializationError::deserialize(&what, CodecError::Base64(e)))?;
                rmp_serde::from_slice(&bytes).map_err(|e| {
                    SerializationError::deserialize(
                        &what,
                        CodecError::MessagePackDecode(Arc::new(e)),
                    )
                })
            }
        }
    }

    /// A readable rendering of a serialized value (for logs and diffs).
    pub fn display(self, text: &str) -> String {
        match self {
            Serializer::Json => text.to_string(),
            Serializer::MessagePack => {
                match base64::engine::general_purpose::STANDARD_NO_PAD.decode(text.as_bytes()) {
                    Ok(bytes) => match rmp_serde::from_slice::<serde_json::Value>(&bytes) {
                        Ok(v) => v.to_string(),
                        Err(_) => text.to_string(),
                    },
                    Err(_) => text.to_string(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::TaskError;
    use std::collections::BTreeMap;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        a: i64,
        b: String,
        c: Vec<f64>,
        d: BTreeMap<String, Option<bool>>,
    }

    #[test]
    fn both_serializers_round_trip() {
        let mut d = BTreeMap::new();
        d.insert("x".to_string(), Some(true));
        d.insert("y".to_string(), None);
        let s = Sample {
            a: -5,
            b: "héllo".into(),
            c: vec![1.5, 2.0],
            d,
        };
        for ser in [Serializer::Json, Serializer::MessagePack] {
            let text = ser.serialize(&s, "sample").unwrap();
            let back: Sample = ser.deserialize(&text, "sample").unwrap();
            assert_eq!(back, s);
            let err = TaskError::new("ValueError", "bad value");
            let text = ser.serialize(&err, "error").unwrap();
            let back: TaskError = ser.deserialize(&text, "error").unwrap();
            assert_eq!(back, err);
        }
    }

    #[test]
    fn bad_payload_names_what() {
        let err = Serializer::Json
            .deserialize::<i64>("{not json", "argument x of task t")
            .unwrap_err();
        assert!(err.to_string().contains("argument x of task t"), "{err}");
        let err = Serializer::MessagePack
            .deserialize::<i64>("!!!", "result of invocation 1")
            .unwrap_err();
        assert!(err.to_string().contains("result of invocation 1"), "{err}");
    }

    #[test]
    fn names() {
        assert_eq!(
            Serializer::from_name("msgpack"),
            Some(Serializer::MessagePack)
        );
        assert_eq!(Serializer::from_name("JSON"), Some(Serializer::Json));
        assert_eq!(Serializer::from_name("pickle"), None);
    }
}
