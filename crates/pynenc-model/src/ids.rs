//! Typed ids: invocations, calls, runners and tasks.
//!
//! An [`InvocationId`] is 32 lowercase hexadecimal digits kept inline (it is
//! `Copy`); the others share their text ([`std::sync::Arc`]), so every id is
//! cheap to clone.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A string that is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{value}' is not a valid {what}: {reason}")]
pub struct InvalidId {
    /// The kind of id expected ("invocation id").
    pub what: &'static str,
    /// The text given (cut to 80 characters).
    pub value: String,
    /// Why it is not one.
    pub reason: &'static str,
}

/// The number of hexadecimal digits of an invocation id.
pub const INVOCATION_ID_LEN: usize = 32;

/// The id of one invocation: 32 lowercase hexadecimal digits, kept inline.
///
/// Backends make them ([`InvocationId::random`], or time ordered with
/// [`InvocationId::from_u128`]); [`InvocationId::parse`] reads one from text
/// (a command line, a stored record) and refuses anything else.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InvocationId([u8; INVOCATION_ID_LEN]);

/// The 8 lower-case hex digits of `nibbles`, most significant first:
/// each nibble spread to a byte of its own, then `'0'` added to each and
/// `'a' - '0' - 10` more to those of 10 and up (eight at a time).
fn hex_digits(nibbles: u32) -> [u8; 8] {
    let x = u64::from(nibbles);
    let x = (x | (x << 16)) & 0x0000_ffff_0000_ffff;
    let x = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff;
    let x = (x | (x << 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    // 1 in each byte whose nibble is 10 or more
    let letters = ((x + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    (x + 0x3030_3030_3030_3030 + letters * 0x27).to_be_bytes()
}

/// The number spelled by 8 lower-case hex digits (the inverse of
/// [`hex_digits`]): `'0'..='9'` are 0x30..0x39 (low four bits 0..9, bit 6
/// clear), `'a'..='f'` 0x61..0x66 (low four bits 1..6, bit 6 set: plus 9);
/// then the eight nibbles packed, eight at a time.
fn digit_values(digits: &[u8]) -> u32 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digits[..8]);
    let x = u64::from_be_bytes(bytes);
    let v = (x & 0x0f0f_0f0f_0f0f_0f0f) + ((x >> 6) & 0x0101_0101_0101_0101) * 9;
    let v = (v | (v >> 4)) & 0x00ff_00ff_00ff_00ff;
    let v = (v | (v >> 8)) & 0x0000_ffff_0000_ffff;
    ((v | (v >> 16)) & 0xffff_ffff) as u32
}

impl InvocationId {
    /// A new random id (the 128 bits of a version 4 UUID).
    pub fn random() -> Self {
        InvocationId::from_u128(uuid::Uuid::new_v4().as_u128())
    }

    /// A new id in creation order: 14 hexadecimal digits of the time in
    /// microseconds, 3 of a per-process sequence, then 15 random ones. Ids
    /// created later sort later (within a process, also those of one
    /// microsecond), so a store's index keeps invocations created together
    /// side by side, and ties in time-sorted sets break in creation order.
    pub fn time_ordered() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let micros = crate::Timestamp::now().as_micros();
        let us = u128::try_from(micros).unwrap_or(0) & 0x00FF_FFFF_FFFF_FFFF;
        let seq = u128::from(SEQ.fetch_add(1, Ordering::Relaxed) & 0xFFF);
        let random = uuid::Uuid::new_v4().as_u128() & 0x0FFF_FFFF_FFFF_FFFF;
        InvocationId::from_u128((us << 72) | (seq << 60) | random)
    }

    /// The id of the call keyed by `key` (e.g. a trigger and its tick),
    /// made at `at`: the same key and time give the same id in every
    /// process, so routing it twice makes one invocation (see
    /// `RouteRequest::invocation_id`). The time goes in the high digits, as
    /// in [`InvocationId::time_ordered`]; the rest are of the SHA-256 of
    /// `key`.
    pub fn keyed(at: crate::Timestamp, key: &str) -> Self {
        use sha2::{Digest, Sha256};
        let us = u128::try_from(at.as_micros()).unwrap_or(0) & 0x00FF_FFFF_FFFF_FFFF;
        let digest = Sha256::digest(key.as_bytes());
        let mut low = [0u8; 16];
        low.copy_from_slice(&digest[..16]);
        let hash = u128::from_be_bytes(low) & ((1u128 << 72) - 1);
        InvocationId::from_u128((us << 72) | hash)
    }

    /// The time in the high digits of a [`InvocationId::time_ordered`] or
    /// [`InvocationId::keyed`] id, in microseconds since the epoch (for a
    /// keyed firing: its tick).
    pub fn time_micros(&self) -> i64 {
        i64::try_from(self.as_u128() >> 72).unwrap_or(i64::MAX)
    }

    /// The id whose digits spell `value` (most significant first): a
    /// backend that wants ids in creation order puts the time in the high bits.
    pub fn from_u128(value: u128) -> Self {
        let mut out = [0u8; INVOCATION_ID_LEN];
        for (i, digits) in out.chunks_exact_mut(8).enumerate() {
            let nibbles = (value >> (96 - 32 * i)) as u32;
            digits.copy_from_slice(&hex_digits(nibbles));
        }
        InvocationId(out)
    }

    /// The number the id's digits spell (the inverse of
    /// [`InvocationId::from_u128`]): ids compare as their numbers do, so an
    /// index may keep the number (cheaper to compare than the text).
    pub fn as_u128(&self) -> u128 {
        self.0.chunks_exact(8).fold(0u128, |acc, digits| {
            (acc << 32) | u128::from(digit_values(digits))
        })
    }

    /// Reads an id: exactly 32 hexadecimal digits (upper case is accepted
    /// and kept as lower case).
    pub fn parse(text: &str) -> Result<Self, InvalidId> {
        let invalid = |reason| InvalidId {
            what: "invocation id",
            value: text.chars().take(80).collect(),
            reason,
        };
        let bytes = text.as_bytes();
        if bytes.len() != INVOCATION_ID_LEN {
            return Err(invalid("an invocation id has 32 hexadecimal digits"));
        }
        let mut out = [0u8; INVOCATION_ID_LEN];
        for (o, b) in out.iter_mut().zip(bytes) {
            *o = match b {
                b'0'..=b'9' | b'a'..=b'f' => *b,
                b'A'..=b'F' => b.to_ascii_lowercase(),
                _ => return Err(invalid("an invocation id has only hexadecimal digits")),
            };
        }
        Ok(InvocationId(out))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // only ASCII hexadecimal digits are ever stored
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The id's 32 ASCII digits.
    pub fn as_bytes(&self) -> &[u8; INVOCATION_ID_LEN] {
        &self.0
    }
}

impl fmt::Display for InvocationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for InvocationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InvocationId({})", self.as_str())
    }
}

impl FromStr for InvocationId {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        InvocationId::parse(s)
    }
}

impl AsRef<str> for InvocationId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Serialize for InvocationId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for InvocationId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        InvocationId::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Defines an id whose text is shared (cheap to clone).
macro_rules! shared_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// The id with this text.
            pub fn new(text: impl Into<Arc<str>>) -> Self {
                $name(text.into())
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The shared text.
            pub fn as_arc(&self) -> &Arc<str> {
                &self.0
            }

            /// Whether two ids share one text (a cheap test before comparing).
            pub fn ptr_eq(&self, other: &$name) -> bool {
                Arc::ptr_eq(&self.0, &other.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), &self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(Arc::from(s))
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(Arc::from(s))
            }
        }

        impl From<Arc<str>> for $name {
            fn from(s: Arc<str>) -> Self {
                $name(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                &*self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                &*self.0 == *other
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Ok($name(Arc::from(&*text)))
            }
        }
    };
}

shared_id!(
    /// Who acts on an invocation: a runner (the owner of what it runs), a
    /// worker process of a pool, the external caller of a process (calls
    /// made outside any runner), the recovery service or the scheduler. The
    /// history records it for every transition.
    RunnerId
);

shared_id!(
    /// The id of a task: its module path and function name
    /// (`my_crate::jobs::add`).
    TaskId
);

shared_id!(
    /// The id of a call: the task id and a stable hash of its arguments
    /// (`my_crate::jobs::add#<64 hex digits>`); see [`crate::Call::call_id`].
    CallId
);

impl CallId {
    /// The task part of the call id.
    pub fn task_id(&self) -> &str {
        self.0.split_once('#').map_or(&*self.0, |(task, _)| task)
    }

    /// The first `n` digits of the arguments' hash (for short, readable references).
    pub fn short_hash(&self, n: usize) -> &str {
        match self.0.split_once('#') {
            Some((_, hash)) => &hash[..n.min(hash.len())],
            None => "",
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn keyed_ids_are_the_same_everywhere_and_carry_their_time() {
        let at = crate::Timestamp::from_micros(1_700_000_000_123_456);
        let a = InvocationId::keyed(at, "every second@1700000000123456");
        assert_eq!(a, InvocationId::keyed(at, "every second@1700000000123456"));
        assert_ne!(
            a,
            InvocationId::keyed(at, "another trigger@1700000000123456")
        );
        assert_eq!(a.time_micros(), at.as_micros());
        let later = crate::Timestamp::from_micros(at.as_micros() + 1);
        assert!(
            InvocationId::keyed(later, "x") > a,
            "time first: keyed ids sort by time"
        );
        assert!(InvocationId::time_ordered().time_micros() > at.as_micros());
    }

    use super::*;

    /// A shift that gives numbers of every length, leading zeros included.
    fn n_shift() -> u32 {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) % 128
    }

    #[test]
    fn u128_round_trips_and_keeps_the_order() {
        let a = InvocationId::time_ordered();
        let b = InvocationId::time_ordered();
        assert_eq!(InvocationId::from_u128(a.as_u128()), a);
        assert_eq!(a < b, a.as_u128() < b.as_u128());
        assert_eq!(InvocationId::from_u128(u128::MAX).as_u128(), u128::MAX);
        // every digit, in both halves
        let n = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210_u128;
        let id = InvocationId::from_u128(n);
        assert_eq!(id.as_str(), "0123456789abcdeffedcba9876543210");
        assert_eq!(id.as_u128(), n);
        for _ in 0..1000 {
            let n = uuid::Uuid::new_v4().as_u128() >> (n_shift());
            let id = InvocationId::from_u128(n);
            assert_eq!(id.as_str(), format!("{n:032x}"));
            assert_eq!(id.as_u128(), n);
        }
        let parsed = InvocationId::parse("FEDCBA98765432100123456789ABCDEF").expect("an id");
        assert_eq!(parsed.as_u128(), 0xfedc_ba98_7654_3210_0123_4567_89ab_cdef);
    }

    #[test]
    fn invocation_ids_round_trip_and_refuse_other_text() {
        let id = InvocationId::random();
        assert_eq!(id.as_str().len(), 32);
        assert_eq!(InvocationId::parse(id.as_str()), Ok(id));
        assert_eq!(id.to_string().parse::<InvocationId>(), Ok(id));
        let upper = id.as_str().to_ascii_uppercase();
        assert_eq!(InvocationId::parse(&upper), Ok(id));
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<InvocationId>(&json).unwrap(), id);
        let err = InvocationId::parse("short").unwrap_err();
        assert!(
            err.to_string()
                .contains("'short' is not a valid invocation id"),
            "{err}"
        );
        assert!(InvocationId::parse(&"g".repeat(32)).is_err());
        assert!(serde_json::from_str::<InvocationId>("\"nope\"").is_err());
    }

    #[test]
    fn ids_from_numbers_keep_their_order() {
        let a = InvocationId::from_u128(1);
        let b = InvocationId::from_u128(0xff << 64);
        assert_eq!(a.as_str(), "00000000000000000000000000000001");
        assert!(a < b);
        assert_eq!(InvocationId::from_u128(u128::MAX).as_str(), "f".repeat(32));
    }

    #[test]
    fn shared_ids() {
        let r = RunnerId::from("ThreadRunner@h:1:ab");
        let copy = r.clone();
        assert!(r.ptr_eq(&copy));
        assert_eq!(r, "ThreadRunner@h:1:ab");
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            "\"ThreadRunner@h:1:ab\""
        );
        let c = CallId::from("m::add#0123abcd");
        assert_eq!(c.task_id(), "m::add");
        assert_eq!(c.short_hash(4), "0123");
        assert_eq!(CallId::from("m::add").short_hash(4), "");
    }
}
