//! Serializers turn argument values, results and errors into strings that
//! every backend can store.
//!
//! JSON is the default; MessagePack is the compact binary alternative (its
//! bytes are carried base64 encoded so every backend stores text).

use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::exceptions::{PynencError, Result};

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
                    .map_err(|e| PynencError::serialization("serialize", what.to_string(), e))?;
                String::from_utf8(text)
                    .map_err(|e| PynencError::serialization("serialize", what.to_string(), e))
            }
            Serializer::MessagePack => {
                let bytes = rmp_serde::to_vec_named(value)
                    .map_err(|e| PynencError::serialization("serialize", what.to_string(), e))?;
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
            Serializer::Json => serde_json::from_str(text)
                .map_err(|e| PynencError::serialization("deserialize", what.to_string(), e)),
            Serializer::MessagePack => {
                let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(text.as_bytes())
                    .map_err(|e| PynencError::serialization("deserialize", what.to_string(), e))?;
                rmp_serde::from_slice(&bytes)
                    .map_err(|e| PynencError::serialization("deserialize", what.to_string(), e))
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
    use crate::exceptions::TaskError;
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
