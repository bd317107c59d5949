//! [`Shared`]: an argument serialized once, however many calls it is
//! given to, and [`ArgValue`], how `#[task]` puts each argument into a
//! call's [`Arguments`].

use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Deserializer, Serialize};

use crate::exceptions::Result;
use crate::serializer::Serializer;
use pynenc_model::Arguments;

/// A task argument serialized once, however many calls it is given to.
///
/// Declare the parameter as `Shared<T>` and give the calls clones of one
/// `Shared` (a clone shares the value): the value is serialized at the first
/// call and every later call reuses that text, so `parallelize` over 1,000
/// calls sharing a 20 MB value serializes it once, holds it once, and the
/// data store (see the README's "Large arguments and results") hashes and
/// stores it once, recognising the other calls' copies by their shared
/// text without comparing bytes. The task receives a
/// `Shared<T>`, which dereferences to the value.
///
/// ```rust,ignore
/// #[pynenc::task]
/// async fn score(model: pynenc::Shared<Vec<f32>>, row: u32) -> f32 {
///     model[row as usize]
/// }
///
/// let model = pynenc::Shared::new(load_model());
/// score::parallelize((0..1000).map(|row| (model.clone(), row))).await?;
/// ```
///
/// `Shared` is for task arguments: it deserializes as `T`, and is not
/// itself `Serialize` (put the value inside other types by reference).
pub struct Shared<T> {
    inner: Arc<Inner<T>>,
}

struct Inner<T> {
    value: T,
    /// The text of the value by the serializer that made it (a process
    /// almost always has one).
    text: Mutex<Option<(Serializer, Arc<str>)>>,
}

impl<T> Shared<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Shared {
            inner: Arc::new(Inner {
                value,
                text: Mutex::new(None),
            }),
        }
    }

    /// The value.
    pub fn get(&self) -> &T {
        &self.inner.value
    }
}

impl<T: Serialize> Shared<T> {
    /// The value serialized by `serializer`: made at the first call, the
    /// same text after.
    pub fn serialized(&self, serializer: Serializer, name: &str) -> Result<Arc<str>> {
        let mut text = self
            .inner
            .text
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((s, t)) = text.as_ref() {
            if *s == serializer {
                return Ok(t.clone());
            }
        }
        let made: Arc<str> =
            Arc::from(serializer.serialize(&self.inner.value, format_args!("argument '{name}'"))?);
        *text = Some((serializer, made.clone()));
        Ok(made)
    }
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared {
            inner: self.inner.clone(),
        }
    }
}

impl<T> Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner.value
    }
}

impl<T: fmt::Debug> fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Shared").field(&self.inner.value).finish()
    }
}

impl<T> From<T> for Shared<T> {
    fn from(value: T) -> Self {
        Shared::new(value)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Shared<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        T::deserialize(deserializer).map(Shared::new)
    }
}

/// How one argument goes into a call's [`Arguments`] (what `#[task]`
/// generates for each parameter): serialized, or for [`Shared`] the text
/// it made once.
pub trait ArgValue {
    /// Puts the value into `arguments` under `name`.
    ///
    /// # Errors
    ///
    /// The value does not serialize.
    fn insert_into(
        &self,
        arguments: &mut Arguments,
        serializer: Serializer,
        name: &'static str,
    ) -> Result<()>;
}

impl<T: Serialize + ?Sized> ArgValue for T {
    fn insert_into(
        &self,
        arguments: &mut Arguments,
        serializer: Serializer,
        name: &'static str,
    ) -> Result<()> {
        Ok(arguments.insert_param(serializer, name, self)?)
    }
}

impl<T: Serialize> ArgValue for Shared<T> {
    fn insert_into(
        &self,
        arguments: &mut Arguments,
        serializer: Serializer,
        name: &'static str,
    ) -> Result<()> {
        arguments.insert_shared_param(name, self.serialized(serializer, name)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialized_once_and_the_same_arguments_as_a_plain_value() {
        let s = Serializer::Json;
        let big = Shared::new("x".repeat(1000));
        let mut a = Arguments::new();
        big.insert_into(&mut a, s, "data").unwrap();
        let mut b = Arguments::new();
        big.clone().insert_into(&mut b, s, "data").unwrap();
        let plain = Arguments::new().with(s, "data", &"x".repeat(1000)).unwrap();
        assert_eq!(a, plain);
        assert_eq!(a.args_id(), plain.args_id());
        // both calls hold the one text
        assert_eq!(
            a.get("data").unwrap().as_ptr(),
            b.get("data").unwrap().as_ptr()
        );
        // another serializer makes its own text
        let mut m = Arguments::new();
        big.insert_into(&mut m, Serializer::MessagePack, "data")
            .unwrap();
        assert_ne!(m.get("data"), a.get("data"));
        // deserializes as the value
        let back: Shared<String> = s.deserialize(a.get("data").unwrap(), "back").unwrap();
        assert_eq!(back.len(), 1000);
        assert_eq!(format!("{:?}", Shared::new(1)), "Shared(1)");
    }
}
