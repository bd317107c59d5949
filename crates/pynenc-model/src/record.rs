//! The stored record of an invocation and its concurrency keys.

use serde::{Deserialize, Serialize};

use pynenc_options::ConcurrencyControl;

use crate::call::Call;
use crate::ids::InvocationId;
use crate::options::TaskOptions;
use crate::serializer::SerializationError;
use crate::time::Timestamp;

/// The stored record of a distributed invocation: what it runs, who asked
/// for it, and when. It never changes once routed; the status, history and
/// outcome are kept beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvocationRecord {
    /// Unique id of this invocation.
    pub invocation_id: InvocationId,
    /// The call it executes.
    pub call: Call,
    /// The invocation that made the call, if any.
    pub parent_invocation_id: Option<InvocationId>,
    /// When it was created; blocking control runs the oldest first.
    #[serde(rename = "created_at_us")]
    pub created_at: Timestamp,
    /// When it is due, for scheduled calls.
    #[serde(rename = "scheduled_at_us")]
    pub scheduled_at: Option<Timestamp>,
    /// Its concurrency keys.
    pub concurrency: ConcurrencySpec,
    /// The invocation this one reruns (`app.control().rerun`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_of: Option<InvocationId>,
}

impl InvocationRecord {
    /// The record as JSON.
    ///
    /// # Errors
    ///
    /// Only if an argument's text cannot be written as JSON, which does not
    /// happen for text the serializers made.
    pub fn to_json(&self) -> Result<String, SerializationError> {
        serde_json::to_string(self).map_err(|e| {
            SerializationError::serialize(
                format_args!("invocation record {}", self.invocation_id),
                e,
            )
        })
    }

    /// A record read from [`InvocationRecord::to_json`].
    ///
    /// # Errors
    ///
    /// The text is not such a record.
    pub fn from_json(json: &str) -> Result<Self, SerializationError> {
        serde_json::from_str(json)
            .map_err(|e| SerializationError::deserialize("invocation record", e))
    }
}

/// The concurrency settings of one call, computed when it is routed and
/// stored with its invocation (see [`concurrency_key`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ConcurrencySpec {
    /// Invocations with the same key cannot be registered twice (reuse instead).
    pub registration_key: Option<String>,
    /// Raise instead of reusing when the registered invocation has other arguments.
    pub on_diff_non_key_args_raise: bool,
    /// Invocations with the same key cannot run at the same time.
    pub running_key: Option<String>,
    /// Re-route an invocation held back by running concurrency (else it ends final).
    pub reroute_on_concurrency_control: bool,
    /// Which invocations with the same registration key a new call reuses.
    #[serde(default, skip_serializing_if = "RegistrationScope::is_default")]
    pub registration_scope: RegistrationScope,
}

/// Which invocation registration concurrency reuses for a new call with the
/// same registration key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "scope")]
pub enum RegistrationScope {
    /// One still queued (`REGISTERED`), as in Pynenc.
    #[default]
    Queued,
    /// Also one that is picked, running or paused (not final): a second
    /// caller joins the run in progress.
    Active,
    /// Also one that ended `SUCCESS` less than `ttl_us` microseconds ago:
    /// its result is returned without running again.
    Cached {
        /// How long a success is reused, in microseconds.
        ttl_us: i64,
    },
}

impl RegistrationScope {
    /// Whether this is [`RegistrationScope::Queued`].
    pub fn is_default(&self) -> bool {
        *self == RegistrationScope::Queued
    }

    /// Whether an invocation that is active (not queued, not final) is reused.
    pub fn reuses_active(&self) -> bool {
        !matches!(self, RegistrationScope::Queued)
    }

    /// The oldest end time of a `SUCCESS` that is reused, at `now`.
    pub fn success_since(&self, now: Timestamp) -> Option<Timestamp> {
        match self {
            RegistrationScope::Cached { ttl_us } => Some(Timestamp::from_micros(
                now.as_micros().saturating_sub(*ttl_us),
            )),
            _ => None,
        }
    }
}

/// The key that groups invocations for a concurrency mode.
pub fn concurrency_key(
    mode: ConcurrencyControl,
    call: &Call,
    key_arguments: &[&str],
) -> Option<String> {
    match mode {
        ConcurrencyControl::Disabled => None,
        ConcurrencyControl::Task => Some(format!("task:{}", call.task_id)),
        ConcurrencyControl::Arguments => Some(format!("args:{}", call.call_id())),
        ConcurrencyControl::Keys => Some(format!(
            "keys:{}#{}",
            call.task_id,
            call.key_arguments(key_arguments).args_id()
        )),
    }
}

impl ConcurrencySpec {
    /// The spec of `call` under `options`.
    pub fn for_call(call: &Call, options: &TaskOptions) -> Self {
        if options.registration_concurrency == ConcurrencyControl::Disabled
            && options.running_concurrency == ConcurrencyControl::Disabled
        {
            return ConcurrencySpec {
                on_diff_non_key_args_raise: options.on_diff_non_key_args_raise,
                reroute_on_concurrency_control: options.reroute_on_concurrency_control,
                ..ConcurrencySpec::default()
            };
        }
        let keys = options.key_args();
        ConcurrencySpec {
            registration_key: concurrency_key(options.registration_concurrency, call, &keys),
            on_diff_non_key_args_raise: options.on_diff_non_key_args_raise,
            running_key: concurrency_key(options.running_concurrency, call, &keys),
            reroute_on_concurrency_control: options.reroute_on_concurrency_control,
            registration_scope: options.registration_scope(),
        }
    }
}
