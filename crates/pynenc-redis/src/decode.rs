//! Reading what the scripts and commands return: records, statuses, and
//! the failures a script raises.

use std::sync::Arc;

use pynenc_model::{
    Call, ConcurrencySpec, InvocationId, InvocationRecord, InvocationStatus, RegistrationScope,
    RunOutcome, RunnerId, StatusRecord, TaskError, Timestamp,
};
use pynenc_store::{Orchestrator, Result, StoreError};
use redis::Value;
use tracing::error;

use crate::backend::RedisBackend;
use crate::script::{as_list, as_string};

/// The values of a picked invocation in a pick-up's reply (`append_picked`
/// in lib.lua): id, call, created, then nil or the rarer fields
/// `[parent, sched, gkey, graise, rkey, reroute, rerun, gscope]`.
pub(crate) const PICK_LEN: usize = 4;

/// Where each field of a record (in the order `decode_record` reads them)
/// is among a picked invocation's rarer fields, for those not among its
/// first three values.
const PICK_RARE: [usize; 11] = [0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7];

/// The fields of a record as `decode_record` reads them, after the status
/// (`get_invocation` asks for the status first, in place of the id).
pub(crate) const RECORD_FIELDS: [&str; 10] = [
    "call", "parent", "created", "sched", "gkey", "graise", "rkey", "reroute", "rerun", "gscope",
];

/// A registration scope as the field `gscope` keeps it: empty for
/// `queued`, `a` for `active`, `c` and the ttl in µs for `cached`.
pub(crate) fn scope_field(scope: RegistrationScope) -> String {
    match scope {
        RegistrationScope::Queued => String::new(),
        RegistrationScope::Active => "a".into(),
        RegistrationScope::Cached { ttl_us } => format!("c{ttl_us}"),
    }
}

/// Reads the field `gscope` (see [`scope_field`]).
pub(crate) fn parse_scope(key: &str, v: Option<&str>) -> Result<RegistrationScope> {
    match v.unwrap_or_default() {
        "" => Ok(RegistrationScope::Queued),
        "a" => Ok(RegistrationScope::Active),
        other => match other.strip_prefix('c').map(str::parse::<i64>) {
            Some(Ok(ttl_us)) => Ok(RegistrationScope::Cached { ttl_us }),
            Some(Err(e)) => Err(corrupt_by(key, "gscope", e)),
            None => Err(corrupt(key, "gscope", format!("'{other}' is not a scope"))),
        },
    }
}

/// The error for an unreadable field of a key.
pub(crate) fn corrupt(key: &str, field: &str, reason: impl std::fmt::Display) -> StoreError {
    StoreError::corrupt(format!("redis key '{key}' (field '{field}')"), reason)
}

/// The error for a field of a key that `cause` (a parser) cannot read.
pub(crate) fn corrupt_by(
    key: &str,
    field: &str,
    cause: impl std::error::Error + Send + Sync + 'static,
) -> StoreError {
    StoreError::corrupt_caused(format!("redis key '{key}' (field '{field}')"), cause)
}

impl RedisBackend {
    /// A failure raised by a script (`kind`, fields...) as a store error.
    pub(crate) fn script_failure(&self, f: &[Value]) -> StoreError {
        let s = |i: usize| f.get(i).and_then(as_string);
        let kind = s(0).unwrap_or_default();
        match kind.as_str() {
            "NOT_FOUND" => {
                let id = s(1).unwrap_or_default();
                match InvocationId::parse(&id) {
                    Ok(id) => StoreError::not_found(&id, s(2).unwrap_or_default()),
                    Err(e) => StoreError::bad_id(format!("redis at {}", self.settings.address), e),
                }
            }
            "TRANSITION" => {
                let id = s(1).unwrap_or_default();
                let from = s(2).unwrap_or_default();
                let owner = s(3);
                let to = s(4).unwrap_or_default();
                let actor = s(5).unwrap_or_default();
                let key = self.key("inv", &id);
                let (from, to) = match (
                    from.parse::<InvocationStatus>(),
                    to.parse::<InvocationStatus>(),
                ) {
                    (Ok(a), Ok(b)) => (a, b),
                    (Err(e), _) | (_, Err(e)) => return corrupt(&key, "status", e),
                };
                let invocation_id = match InvocationId::parse(&id) {
                    Ok(id) => id,
                    Err(e) => return StoreError::bad_id(key, e),
                };
                // the same check the script made, for the same message
                let current = StatusRecord {
                    status: from,
                    owner: owner.map(RunnerId::from),
                };
                match current.transition(to, &RunnerId::from(actor.as_str())) {
                    Err(source) => StoreError::Transition {
                        invocation_id,
                        source,
                    },
                    Ok(_) => self.bad_reply(format!(
                        "the transition {from} -> {to} of invocation {id} by {actor} was refused by the server"
                    )),
                }
            }
            "STILL_WAITING" => {
                let (waiter, waited) = (s(1).unwrap_or_default(), s(2).unwrap_or_default());
                match (InvocationId::parse(&waiter), InvocationId::parse(&waited)) {
                    (Ok(invocation_id), Ok(waited)) => StoreError::StillWaiting {
                        invocation_id,
                        waited,
                    },
                    (Err(e), _) | (_, Err(e)) => {
                        StoreError::bad_id(format!("redis at {}", self.settings.address), e)
                    }
                }
            }
            "CORRUPT" => corrupt(
                &s(1).unwrap_or_default(),
                &s(2).unwrap_or_default(),
                format!(
                    "'{}' is not valid",
                    s(3).unwrap_or_default()
                        .chars()
                        .take(80)
                        .collect::<String>()
                ),
            ),
            other => self.bad_reply(format!(
                "script failure {other}: {:?}",
                f.iter().skip(1).filter_map(as_string).collect::<Vec<_>>()
            )),
        }
    }

    /// An invocation record from `[id, call, parent, created, sched, gkey,
    /// graise, rkey, reroute, rerun, gscope]`.
    pub(crate) fn decode_record(&self, f: &[Value]) -> Result<InvocationRecord> {
        self.decode_fields(|i| f.get(i).and_then(as_string))
    }

    /// A picked invocation (see [`PICK_LEN`]) as a record.
    fn decode_picked(&self, p: &[Value]) -> Result<InvocationRecord> {
        let rare = p.get(3).map(as_list).unwrap_or_default();
        self.decode_fields(|i| match i {
            0 | 1 => p.get(i).and_then(as_string),
            3 => p.get(2).and_then(as_string),
            2 => rare.first().and_then(as_string),
            _ => rare.get(PICK_RARE[i]).and_then(as_string),
        })
    }

    /// A record from its fields, in the order of [`Self::decode_record`]
    /// (`s(i)`: the field `i`, `None` where missing).
    fn decode_fields(&self, s: impl Fn(usize) -> Option<String>) -> Result<InvocationRecord> {
        let id = s(0).unwrap_or_default();
        let key = self.key("inv", &id);
        let invocation_id = InvocationId::parse(&id).map_err(|e| StoreError::bad_id(&key, e))?;
        let call_json = s(1).ok_or_else(|| corrupt(&key, "call", "missing"))?;
        let call: Call =
            serde_json::from_str(&call_json).map_err(|e| corrupt_by(&key, "call", e))?;
        let created = s(3)
            .ok_or_else(|| corrupt(&key, "created", "missing"))?
            .parse::<i64>()
            .map_err(|e| corrupt_by(&key, "created", e))?;
        let scheduled = match s(4) {
            Some(v) if !v.is_empty() => Some(Timestamp::from_micros(
                v.parse::<i64>().map_err(|e| corrupt_by(&key, "sched", e))?,
            )),
            _ => None,
        };
        let parent = match s(2).filter(|x| !x.is_empty()) {
            Some(p) => Some(InvocationId::parse(&p).map_err(|e| corrupt_by(&key, "parent", e))?),
            None => None,
        };
        let nonempty = |v: Option<String>| v.filter(|x| !x.is_empty());
        let rerun_of = match nonempty(s(9)) {
            Some(r) => Some(InvocationId::parse(&r).map_err(|e| corrupt_by(&key, "rerun", e))?),
            None => None,
        };
        let registration_scope = parse_scope(&key, s(10).as_deref())?;
        Ok(InvocationRecord {
            invocation_id,
            call,
            parent_invocation_id: parent,
            created_at: Timestamp::from_micros(created),
            scheduled_at: scheduled,
            concurrency: ConcurrencySpec {
                registration_key: nonempty(s(5)),
                on_diff_non_key_args_raise: s(6).as_deref() == Some("1"),
                running_key: nonempty(s(7)),
                reroute_on_concurrency_control: s(8).as_deref() == Some("1"),
                registration_scope,
            },
            rerun_of,
        })
    }

    /// A status read from the invocation `id`'s hash.
    pub(crate) fn parse_status(&self, id: &InvocationId, v: &str) -> Result<InvocationStatus> {
        v.parse::<InvocationStatus>()
            .map_err(|e| corrupt(&self.invocation_key(id), "status", e))
    }

    /// The invocations of a pick-up's outcome; corrupt ones are logged,
    /// and failed where they were already claimed.
    pub(crate) async fn decode_pick(
        &self,
        runner_id: &RunnerId,
        body: Value,
        started: bool,
    ) -> Result<Vec<Arc<InvocationRecord>>> {
        let parts = as_list(&body);
        let picked = parts.first().map(as_list).unwrap_or_default();
        for key in parts
            .get(1)
            .map(as_list)
            .unwrap_or_default()
            .iter()
            .filter_map(as_string)
        {
            error!(redis_key = %key, "skipped a queued invocation whose record is corrupt (field 'status')");
        }
        // PICK_LEN values each (see lib.lua)
        let mut out = Vec::with_capacity(picked.len() / PICK_LEN);
        for fields in picked.chunks(PICK_LEN) {
            match self.decode_picked(fields) {
                Ok(r) => {
                    if matches!(fields.get(3), Some(Value::Array(_))) {
                        // its end reads the rarer fields at once
                        self.rare_ends.note(r.invocation_id);
                    }
                    out.push(Arc::new(r))
                }
                Err(e) => {
                    let id = fields.first().and_then(as_string).unwrap_or_default();
                    match InvocationId::parse(&id) {
                        Ok(id) => self.fail_corrupt(runner_id, &id, started, &e).await,
                        Err(_) => {
                            error!(invocation_id = %id, error = %e, "cannot decode a claimed invocation, nor its id")
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// A claimed invocation whose record cannot be decoded ends `FAILED` with
    /// the decoding error, so its waiters learn what is wrong.
    async fn fail_corrupt(
        &self,
        runner_id: &RunnerId,
        id: &InvocationId,
        started: bool,
        err: &StoreError,
    ) {
        error!(invocation_id = %id, error = %err, "cannot decode a claimed invocation; it fails");
        let te = TaskError::new(err.kind(), err.to_string());
        let res = async {
            if !started {
                self.set_status(id, InvocationStatus::Running, runner_id, None)
                    .await?;
            }
            self.finish(id, runner_id, RunOutcome::Failed(te)).await
        }
        .await;
        if let Err(e) = res {
            error!(invocation_id = %id, error = %e, "could not fail the corrupt invocation");
        }
    }
}
