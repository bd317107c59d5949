//! Values kept out of band: a large serialized argument or result is stored
//! once in the backend's data store under its content digest, and the record
//! carries a [`DataRef`] in its place.
//!
//! A reference is written where the value would be, as a marker text
//! (`@pynenc-data:sha256:<64 hex digits>:<length>`). No serialized value can
//! look like one: JSON text never starts with `@`, and base64 (the
//! MessagePack serializer's text) never contains it.
//!
//! The content digest is the SHA-256 of the serialized text, the same digest
//! [`crate::Arguments::args_id`] composes per argument, so a call has the same
//! id whether its arguments are inline or stored.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ids::InvocationId;

/// What starts the marker text of a [`DataRef`].
pub const DATA_MARKER_PREFIX: &str = "@pynenc-data:sha256:";

/// A value stored in the data store: the SHA-256 of its serialized text, and
/// its length in bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DataRef {
    digest: [u8; 32],
    len: u64,
}

impl DataRef {
    /// The reference of a serialized value.
    pub fn of(text: &str) -> DataRef {
        DataRef {
            digest: content_digest(text),
            len: text.len() as u64,
        }
    }

    /// A reference from its parts (as a backend stores them).
    pub fn from_parts(digest: [u8; 32], len: u64) -> DataRef {
        DataRef { digest, len }
    }

    /// The SHA-256 of the serialized text.
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    /// The length of the serialized text, in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the value is empty (never stored out of band in practice).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest in 64 lowercase hexadecimal digits: the key of the value
    /// in every backend.
    pub fn key(&self) -> String {
        hex::encode(self.digest)
    }

    /// A reference from its key and length (see [`DataRef::key`]).
    pub fn from_key(key: &str, len: u64) -> Option<DataRef> {
        let mut digest = [0u8; 32];
        hex::decode_to_slice(key, &mut digest).ok()?;
        Some(DataRef { digest, len })
    }

    /// The marker text written where the value would be.
    pub fn marker(&self) -> String {
        format!("{DATA_MARKER_PREFIX}{}:{}", self.key(), self.len)
    }

    /// The reference a marker text stands for; `None` for any other text
    /// (an inline value).
    pub fn parse(text: &str) -> Option<DataRef> {
        let rest = text.strip_prefix(DATA_MARKER_PREFIX)?;
        let (key, len) = rest.split_once(':')?;
        if key.len() != 64 {
            return None;
        }
        DataRef::from_key(key, len.parse().ok()?)
    }

    /// The digest of a serialized value that may be a marker: the marker's
    /// digest, or the SHA-256 of the inline text.
    pub fn digest_of_value(text: &str) -> [u8; 32] {
        match DataRef::parse(text) {
            Some(r) => r.digest,
            None => content_digest(text),
        }
    }
}

impl fmt::Debug for DataRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataRef({}, {} bytes)", self.key(), self.len)
    }
}

impl fmt::Display for DataRef {
    /// `<stored value sha256:0123456789ab…, 20.0 MB>`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = self.key();
        write!(
            f,
            "<stored value sha256:{}…, {}>",
            &key[..12],
            human_bytes(self.len)
        )
    }
}

/// `1.5 kB`, `20.0 MB`: a size for messages.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if n < 1000 {
        return format!("{n} bytes");
    }
    let mut v = n as f64 / 1000.0;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// The SHA-256 of a serialized text.
pub fn content_digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// A value's claim: the invocations whose records refer to it.
///
/// Every write of a reference is preceded by a claim (or a put) naming the
/// invocation that will hold it, so a sweep never removes a value that a
/// record refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataClaim {
    /// The value.
    pub data: DataRef,
    /// The invocations that refer to it (ids chosen before routing, or the
    /// invocation whose result it is).
    pub referenced_by: Vec<InvocationId>,
}

/// How much the data store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataUsage {
    /// Distinct values stored.
    pub values: u64,
    /// Their total size, in bytes.
    pub bytes: u64,
    /// References recorded (one per invocation and value).
    pub references: u64,
}

/// What a sweep of the data store removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataSweep {
    /// Values examined (unclaimed for the whole grace period).
    pub examined: u64,
    /// Values removed: no invocation refers to them any more.
    pub removed: u64,
    /// The bytes those values held.
    pub bytes_freed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_round_trip_and_rejects() {
        let r = DataRef::of("\"hello\"");
        assert_eq!(r.len(), 7);
        let marker = r.marker();
        assert!(marker.starts_with(DATA_MARKER_PREFIX));
        assert_eq!(DataRef::parse(&marker), Some(r));
        assert_eq!(DataRef::from_key(&r.key(), 7), Some(r));
        // inline values are never markers
        assert_eq!(DataRef::parse("\"@pynenc-data:sha256:\""), None);
        assert_eq!(DataRef::parse("12"), None);
        assert_eq!(DataRef::parse(&format!("{DATA_MARKER_PREFIX}abc:3")), None);
        assert_eq!(DataRef::parse(&format!("{}x", &marker)), None);
        // a marker's digest is the digest of the value it stands for
        assert_eq!(
            DataRef::digest_of_value(&marker),
            content_digest("\"hello\"")
        );
        assert_eq!(DataRef::digest_of_value("1"), content_digest("1"));
        assert!(r.to_string().contains("7 bytes"));
        assert_eq!(human_bytes(20_000_000), "20.0 MB");
    }
}
