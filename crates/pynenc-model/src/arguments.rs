//! Task arguments, bound by parameter name and serialized one by one.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::DataRef;
use crate::serializer::{Result, Serializer};

/// The arguments of one call: parameter name → serialized value.
///
/// Arguments are kept sorted by name, so the same values given in any order
/// produce the same [`Arguments::args_id`]. They serialize as a map
/// (`{"x": "1", "y": "2"}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Arguments {
    // sorted by name, unique names; a small vec is far lighter than a map.
    // Names given by a task's parameters are static: they are not copied.
    values: Vec<(Cow<'static, str>, Text)>,
}

/// One serialized value: its own text, or a text shared with other calls
/// (an argument serialized once, see [`Arguments::insert_shared_param`]).
#[derive(Debug, Clone)]
enum Text {
    Owned(String),
    Shared(Arc<str>),
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            Text::Owned(s) => s,
            Text::Shared(s) => s,
        }
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Text {}

impl std::hash::Hash for Text {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (**self).hash(state)
    }
}

/// A serialized value [`Arguments::externalize`] moved out of the
/// arguments: its own text or one shared with other calls, handed over
/// without a copy.
#[derive(Debug)]
pub struct MovedText(Text);

impl MovedText {
    /// The serialized text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text as a shared string (no copy if it was shared already).
    pub fn into_shared(self) -> Arc<str> {
        match self.0 {
            Text::Owned(s) => Arc::from(s),
            Text::Shared(s) => s,
        }
    }
}

impl Serialize for Arguments {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.values.len()))?;
        for (k, v) in &self.values {
            map.serialize_entry(k, &**v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Arguments {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let map = BTreeMap::<String, String>::deserialize(deserializer)?;
        Ok(Arguments::from_serialized(map))
    }
}

impl Arguments {
    /// No arguments.
    pub fn new() -> Self {
        Arguments::default()
    }

    /// No arguments yet, with room for `n` (a task's parameter count: the
    /// arguments of a call then take exactly the memory they need).
    pub fn with_capacity(n: usize) -> Self {
        Arguments {
            values: Vec::with_capacity(n),
        }
    }

    /// Arguments from already serialized values.
    pub fn from_serialized(values: BTreeMap<String, String>) -> Self {
        Arguments {
            values: values
                .into_iter()
                .map(|(k, v)| (Cow::Owned(k), Text::Owned(v)))
                .collect(),
        }
    }

    /// Adds one argument, serialized with `serializer`.
    pub fn with<T: Serialize + ?Sized>(
        mut self,
        serializer: Serializer,
        name: &str,
        value: &T,
    ) -> Result<Self> {
        self.insert(serializer, name, value)?;
        Ok(self)
    }

    /// Sets one argument, serialized with `serializer`.
    pub fn insert<T: Serialize + ?Sized>(
        &mut self,
        serializer: Serializer,
        name: &str,
        value: &T,
    ) -> Result<()> {
        let text = serializer.serialize(value, format_args!("argument '{name}'"))?;
        self.put(Cow::Owned(name.to_string()), Text::Owned(text));
        Ok(())
    }

    /// [`Arguments::insert`] for a parameter whose name is known at compile
    /// time (what `#[pynenc::task]` generates): the name is not copied.
    pub fn insert_param<T: Serialize + ?Sized>(
        &mut self,
        serializer: Serializer,
        name: &'static str,
        value: &T,
    ) -> Result<()> {
        let text = serializer.serialize(value, format_args!("argument '{name}'"))?;
        self.put(Cow::Borrowed(name), Text::Owned(text));
        Ok(())
    }

    /// Sets one argument to a text serialized once and shared with other
    /// calls: many calls given the same large value hold one copy, and the
    /// data store recognises it without comparing bytes.
    pub fn insert_shared_param(&mut self, name: &'static str, text: Arc<str>) {
        self.put(Cow::Borrowed(name), Text::Shared(text));
    }

    /// Sets one argument to a shared serialized text (see
    /// [`Arguments::insert_shared_param`]) under a name known at run time.
    pub fn insert_shared(&mut self, name: &str, text: Arc<str>) {
        self.put(Cow::Owned(name.to_string()), Text::Shared(text));
    }

    /// Sets one already serialized argument.
    pub fn insert_serialized(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.put(Cow::Owned(name.into()), Text::Owned(value.into()));
    }

    fn put(&mut self, name: Cow<'static, str>, value: Text) {
        match self.values.binary_search_by(|(k, _)| (**k).cmp(&*name)) {
            Ok(i) => self.values[i].1 = value,
            Err(i) => self.values.insert(i, (name, value)),
        }
    }

    /// The serialized value of an argument.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .binary_search_by(|(k, _)| (**k).cmp(name))
            .ok()
            .map(|i| &*self.values[i].1)
    }

    /// All `(name, serialized value)` pairs, sorted by name.
    pub fn serialized(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (&**k, &**v))
    }

    /// Arguments from a JSON object of parameter name to value, each value
    /// serialized with `serializer` (what callers by name send).
    ///
    /// # Errors
    ///
    /// A value the serializer refuses, naming its argument.
    pub fn from_json(
        serializer: Serializer,
        values: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Arguments> {
        let mut args = Arguments::new();
        for (name, value) in values {
            args.insert(serializer, name, value)?;
        }
        Ok(args)
    }

    /// The values as a JSON object of parameter name to value (a value that
    /// does not decode, such as the reference of one kept in the data
    /// store, is `null`).
    pub fn to_json(&self, serializer: Serializer) -> serde_json::Map<String, serde_json::Value> {
        self.serialized()
            .map(|(name, text)| {
                let v = serializer
                    .deserialize::<serde_json::Value>(text, format_args!("argument '{name}'"))
                    .unwrap_or(serde_json::Value::Null);
                (name.to_string(), v)
            })
            .collect()
    }

    /// The number of arguments.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The total size of the serialized values, in bytes.
    pub fn size_bytes(&self) -> usize {
        self.values.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// A stable id for these arguments: the SHA-256 of the sorted
    /// `name=digest` lines, where the digest is the SHA-256 of the value's
    /// serialized text, so a value stored out of band ([`DataRef`]) gives
    /// the same id as the same value inline.
    pub fn args_id(&self) -> String {
        let mut out = String::with_capacity(64);
        self.push_args_id(&mut out);
        out
    }

    /// The 32 bytes of the SHA-256 hash that [`Arguments::args_id`] spells
    /// in hexadecimal.
    pub fn args_hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for (k, v) in &self.values {
            h.update(k.as_bytes());
            h.update(b"=");
            h.update(DataRef::digest_of_value(v));
            h.update(b"\n");
        }
        h.finalize().into()
    }

    /// Appends [`Arguments::args_id`] to `out` (no allocation of its own).
    pub fn push_args_id(&self, out: &mut String) {
        let mut hex = [0u8; 64];
        // 32 bytes always fit 64 hexadecimal digits
        if hex::encode_to_slice(self.args_hash(), &mut hex).is_ok() {
            out.push_str(std::str::from_utf8(&hex).unwrap_or_default());
        }
    }

    /// The arguments stored out of band: `(name, reference)`.
    pub fn stored(&self) -> impl Iterator<Item = (&str, DataRef)> {
        self.values
            .iter()
            .filter_map(|(k, v)| DataRef::parse(v).map(|r| (&**k, r)))
    }

    /// Whether any argument is stored out of band.
    pub fn has_stored(&self) -> bool {
        self.stored().next().is_some()
    }

    /// Moves every inline value longer than `min_size` bytes out, except
    /// those `keep_inline` names, leaving its [`DataRef`] marker in its
    /// place: `store` takes each value moved out and returns its reference
    /// ([`DataRef::of`] its text, or a caller's memory of values it has
    /// seen). Returns how many values moved. The arguments' id does not
    /// change.
    pub fn externalize(
        &mut self,
        min_size: usize,
        keep_inline: impl Fn(&str) -> bool,
        mut store: impl FnMut(MovedText) -> DataRef,
    ) -> usize {
        let mut moved = 0;
        for (k, v) in &mut self.values {
            if v.len() > min_size && !keep_inline(k) && DataRef::parse(v).is_none() {
                let text = std::mem::replace(v, Text::Owned(String::new()));
                *v = Text::Owned(store(MovedText(text)).marker());
                moved += 1;
            }
        }
        moved
    }

    /// Only the named arguments (for key based concurrency control).
    pub fn subset(&self, keys: &[&str]) -> Arguments {
        Arguments {
            values: self
                .values
                .iter()
                .filter(|(k, _)| keys.contains(&&**k))
                .cloned()
                .collect(),
        }
    }

    /// A readable line per argument that differs between `self` (existing) and `other` (new).
    pub fn diff(&self, other: &Arguments, serializer: Serializer) -> String {
        let mut lines = Vec::new();
        let names: std::collections::BTreeSet<&str> = self
            .values
            .iter()
            .chain(other.values.iter())
            .map(|(k, _)| &**k)
            .collect();
        for name in names {
            let a = self.get(name);
            let b = other.get(name);
            if a != b {
                let show = |v: Option<&str>| match v {
                    Some(v) => truncate(&display_value(v, serializer), 80),
                    None => "(missing)".to_string(),
                };
                lines.push(format!("  {name}: existing {} != new {}", show(a), show(b)));
            }
        }
        if lines.is_empty() {
            "  (no difference)".into()
        } else {
            lines.join("\n")
        }
    }

    /// The arguments rendered for a log line according to `mode`.
    pub fn render(&self, mode: ArgumentPrintMode, serializer: Serializer) -> String {
        match mode {
            ArgumentPrintMode::Hidden => "<arguments hidden>".into(),
            ArgumentPrintMode::Keys => {
                let keys: Vec<&str> = self.values.iter().map(|(k, _)| &**k).collect();
                format!("({})", keys.join(", "))
            }
            ArgumentPrintMode::Full | ArgumentPrintMode::Truncated(_) => {
                let parts: Vec<String> = self
                    .values
                    .iter()
                    .map(|(k, v)| {
                        let shown = display_value(v, serializer);
                        let shown = match mode {
                            ArgumentPrintMode::Truncated(n) => truncate(&shown, n),
                            _ => shown,
                        };
                        format!("{k}={shown}")
                    })
                    .collect();
                format!("({})", parts.join(", "))
            }
        }
    }
}

/// How arguments are shown in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ArgumentPrintMode {
    /// Every value in full.
    Full,
    /// Only the argument names.
    Keys,
    /// Values cut to this many characters.
    Truncated(usize),
    /// Nothing.
    Hidden,
}

impl Default for ArgumentPrintMode {
    /// Values cut to 32 characters.
    fn default() -> Self {
        ArgumentPrintMode::Truncated(32)
    }
}

impl ArgumentPrintMode {
    /// Parses `full`, `keys`, `truncated` (with `truncate_length`) or `hidden`.
    pub fn parse(name: &str, truncate_length: usize) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "full" => Some(ArgumentPrintMode::Full),
            "keys" | "keys_only" => Some(ArgumentPrintMode::Keys),
            "truncated" | "truncate" => Some(ArgumentPrintMode::Truncated(truncate_length)),
            "hidden" | "none" => Some(ArgumentPrintMode::Hidden),
            _ => None,
        }
    }
}

/// A serialized value for people: a stored value's reference, or the
/// serializer's rendering of an inline one.
pub fn display_value(text: &str, serializer: Serializer) -> String {
    match DataRef::parse(text) {
        Some(data) => data.to_string(),
        None => serializer.display(text),
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let cut: String = s.chars().take(n).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_id_is_stable_and_order_independent() {
        let s = Serializer::Json;
        let a = Arguments::new()
            .with(s, "x", &1)
            .unwrap()
            .with(s, "y", &"two")
            .unwrap();
        let b = Arguments::new()
            .with(s, "y", &"two")
            .unwrap()
            .with(s, "x", &1)
            .unwrap();
        assert_eq!(a.args_id(), b.args_id());
        // fixed value: the hash must not change between releases
        assert_eq!(a.args_id().len(), 64);
        assert_eq!(a.args_id(), a.clone().args_id());
        let c = Arguments::new()
            .with(s, "x", &2)
            .unwrap()
            .with(s, "y", &"two")
            .unwrap();
        assert_ne!(a.args_id(), c.args_id());
        // the name is part of the identity
        let d = Arguments::new()
            .with(s, "z", &1)
            .unwrap()
            .with(s, "y", &"two")
            .unwrap();
        assert_ne!(a.args_id(), d.args_id());
        // static parameter names (as the task macro sets them) mean the same
        let mut e = Arguments::new();
        e.insert_param(s, "y", &"two").unwrap();
        e.insert_param(s, "x", &0).unwrap();
        e.insert_param(s, "x", &1).unwrap();
        assert_eq!(e, a);
        assert_eq!(e.args_id(), a.args_id());
        assert_eq!(e.len(), 2);
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            serde_json::to_string(&a).unwrap()
        );
    }

    #[test]
    fn args_id_known_value() {
        let a = Arguments::new().with(Serializer::Json, "x", &1).unwrap();
        let mut h = Sha256::new();
        h.update(b"x=");
        h.update(Sha256::digest(b"1"));
        h.update(b"\n");
        assert_eq!(a.args_id(), hex::encode(h.finalize()));
    }

    #[test]
    fn externalized_arguments_keep_their_id() {
        let s = Serializer::Json;
        let big = "x".repeat(100);
        let a = Arguments::new()
            .with(s, "big", &big)
            .unwrap()
            .with(s, "keep", &big)
            .unwrap()
            .with(s, "small", &1)
            .unwrap();
        let mut b = a.clone();
        let mut moved = Vec::new();
        let n = b.externalize(
            50,
            |name| name == "keep",
            |text| {
                let data = DataRef::of(text.as_str());
                moved.push((data, text.into_shared()));
                data
            },
        );
        assert_eq!(n, 1);
        let (data, value) = &moved[0];
        assert_eq!(&**value, a.get("big").unwrap());
        assert_eq!(*data, DataRef::of(value));
        assert_eq!(b.get("big"), Some(data.marker().as_str()));
        assert_eq!(b.get("keep"), a.get("keep"));
        assert_eq!(b.args_id(), a.args_id());
        assert_eq!(b.stored().collect::<Vec<_>>(), vec![("big", *data)]);
        assert!(b.has_stored() && !a.has_stored());
        // a second pass moves nothing more
        assert_eq!(
            b.clone()
                .externalize(50, |_| false, |t| DataRef::of(t.as_str())),
            1
        );
        // a shared text is the same argument as its own copy
        let shared: Arc<str> = Arc::from(a.get("big").unwrap());
        let mut c = Arguments::new().with(s, "keep", &big).unwrap();
        c.insert_shared_param("big", shared.clone());
        c.insert_param(s, "small", &1).unwrap();
        assert_eq!(c, a);
        assert_eq!(c.args_id(), a.args_id());
        let mut same = None;
        c.externalize(
            50,
            |n| n == "keep",
            |t| {
                same = Some(t.as_str().as_ptr() == shared.as_ptr());
                DataRef::of(t.as_str())
            },
        );
        assert_eq!(same, Some(true), "handed over without a copy");
        assert!(b
            .render(ArgumentPrintMode::Full, s)
            .contains("<stored value sha256:"));
    }

    #[test]
    fn diff_and_render() {
        let s = Serializer::Json;
        let a = Arguments::new()
            .with(s, "x", &1)
            .unwrap()
            .with(s, "y", &2)
            .unwrap();
        let b = Arguments::new()
            .with(s, "x", &1)
            .unwrap()
            .with(s, "y", &3)
            .unwrap();
        assert_eq!(a.diff(&b, s), "  y: existing 2 != new 3");
        assert_eq!(a.render(ArgumentPrintMode::Full, s), "(x=1, y=2)");
        assert_eq!(a.render(ArgumentPrintMode::Keys, s), "(x, y)");
        assert_eq!(a.render(ArgumentPrintMode::Hidden, s), "<arguments hidden>");
        let long = Arguments::new().with(s, "t", &"abcdefghij").unwrap();
        assert_eq!(
            long.render(ArgumentPrintMode::Truncated(4), s),
            "(t=\"abc…)"
        );
        assert_eq!(a.subset(&["y"]).len(), 1);
    }
}
