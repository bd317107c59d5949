//! The Lua scripts: a prelude generated from [`InvocationStatus`], the shared
//! library (`lua/lib.lua`) and one body per atomic step.
//!
//! The state machine is not written in Lua: [`prelude`] renders the tables
//! of [`InvocationStatus::allowed_next`], [`InvocationStatus::requires_owner_for`],
//! [`InvocationStatus::ownership`],
//! [`InvocationStatus::is_final`], [`InvocationStatus::is_owned_running`],
//! [`InvocationStatus::is_available_for_run`] and
//! [`InvocationStatus::initial`] over [`ALL_STATUSES`] when the scripts are
//! built, so the scripts enforce exactly the table the rest of the crate uses.

use std::fmt::Write as _;
use std::sync::OnceLock;

use redis::{Script, Value};

use crate::status::{InvocationStatus, Ownership, ALL_STATUSES};

const LIB: &str = include_str!("lua/lib.lua");

/// Every script, built once per process.
pub(crate) struct Scripts {
    pub route: Script,
    pub pick: Script,
    pub set_status: Script,
    pub finish: Script,
    pub kill_reroute: Script,
    pub wait: Script,
    pub promote: Script,
    pub purge_final: Script,
    pub recover: Script,
    pub small: Script,
}

/// The scripts of this process (the same text, hence the same SHA, for every app).
pub(crate) fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| {
        let prelude = prelude();
        let build = |body: &str| Script::new(&assemble(&prelude, body));
        Scripts {
            route: build(include_str!("lua/route.lua")),
            pick: build(include_str!("lua/pick.lua")),
            set_status: build(include_str!("lua/set_status.lua")),
            finish: build(include_str!("lua/finish.lua")),
            kill_reroute: build(include_str!("lua/kill_reroute.lua")),
            wait: build(include_str!("lua/wait.lua")),
            promote: build(include_str!("lua/promote.lua")),
            purge_final: build(include_str!("lua/purge_final.lua")),
            recover: build(include_str!("lua/recover.lua")),
            small: build(include_str!("lua/small.lua")),
        }
    })
}

/// The full text of one script: prelude, library, body, and the call of `main`.
pub(crate) fn assemble(prelude: &str, body: &str) -> String {
    format!("{prelude}\n{LIB}\n{body}\nreturn run(main)\n")
}

fn lua_str(s: &str) -> String {
    format!("'{s}'")
}

fn status_set(out: &mut String, name: &str, pred: impl Fn(InvocationStatus) -> bool) {
    let _ = write!(out, "local {name} = {{");
    for st in ALL_STATUSES.iter().copied().filter(|s| pred(*s)) {
        let _ = write!(out, "[{}]=true,", lua_str(st.as_str()));
    }
    out.push_str("}\n");
}

/// The state machine as Lua tables, generated from [`InvocationStatus`].
pub(crate) fn prelude() -> String {
    let mut out = String::from("-- generated from pynenc::status::InvocationStatus; do not edit\n");
    out.push_str("local ST = {");
    for st in ALL_STATUSES {
        let _ = write!(out, "{}={},", st.as_str(), lua_str(st.as_str()));
    }
    out.push_str("}\n");
    // transitions as 'FROM>TO' keys: one table instead of one per status
    out.push_str("local ALLOWED = {");
    for from in ALL_STATUSES {
        for to in from.allowed_next() {
            let _ = write!(out, "[{}]=true,", lua_str(&format!("{from}>{to}")));
        }
    }
    out.push_str("}\n");
    out.push_str("local REQUIRES_OWNER = {");
    for from in ALL_STATUSES {
        for to in from
            .allowed_next()
            .iter()
            .filter(|to| from.requires_owner_for(**to))
        {
            let _ = write!(out, "[{}]=true,", lua_str(&format!("{from}>{to}")));
        }
    }
    out.push_str("}\n");
    out.push_str("local OWNERSHIP = {");
    for st in ALL_STATUSES {
        let o = match st.ownership() {
            Ownership::Acquire => "acquire",
            Ownership::Keep => "keep",
            Ownership::Release => "release",
        };
        let _ = write!(out, "[{}]={},", lua_str(st.as_str()), lua_str(o));
    }
    out.push_str("}\n");
    status_set(&mut out, "FINAL", InvocationStatus::is_final);
    status_set(
        &mut out,
        "OWNED_RUNNING",
        InvocationStatus::is_owned_running,
    );
    status_set(
        &mut out,
        "AVAILABLE",
        InvocationStatus::is_available_for_run,
    );
    status_set(&mut out, "INITIAL", |s| {
        InvocationStatus::initial().contains(&s)
    });
    out
}

/// A decoded script reply.
pub(crate) struct Reply {
    /// Whether the script queued ids (runners may have work).
    pub enqueued: bool,
    /// Invocations that became final in the script.
    pub finals: Vec<String>,
    /// The result, or the failure raised by the script (`kind`, fields...).
    pub body: std::result::Result<Value, Vec<Value>>,
}

impl Reply {
    /// Decodes `{'OK'|'ERR', enqueued, finals, payload}`.
    pub fn decode(v: Value) -> Option<Reply> {
        let Value::Array(mut items) = v else {
            return None;
        };
        if items.len() < 3 {
            return None;
        }
        let payload = if items.len() >= 4 {
            items.swap_remove(3)
        } else {
            Value::Nil
        };
        let finals = as_list(&items[2]).iter().filter_map(as_string).collect();
        let enqueued = as_int(&items[1]).unwrap_or(0) != 0;
        let body = match as_string(&items[0]).as_deref() {
            Some("OK") => Ok(payload),
            Some("ERR") => Err(match payload {
                Value::Array(a) => a,
                other => vec![other],
            }),
            _ => return None,
        };
        Some(Reply {
            enqueued,
            finals,
            body,
        })
    }
}

/// A string value (bulk, simple or integer), `None` for nil.
pub(crate) fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Okay => Some("OK".into()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// An integer value (integer or numeric string).
pub(crate) fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => as_string(other).and_then(|s| s.parse().ok()),
    }
}

/// The items of an array value (empty for anything else).
pub(crate) fn as_list(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) => a,
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODIES: &[(&str, &str)] = &[
        ("lib", LIB),
        ("route", include_str!("lua/route.lua")),
        ("pick", include_str!("lua/pick.lua")),
        ("set_status", include_str!("lua/set_status.lua")),
        ("finish", include_str!("lua/finish.lua")),
        ("kill_reroute", include_str!("lua/kill_reroute.lua")),
        ("wait", include_str!("lua/wait.lua")),
        ("promote", include_str!("lua/promote.lua")),
        ("purge_final", include_str!("lua/purge_final.lua")),
        ("recover", include_str!("lua/recover.lua")),
        ("small", include_str!("lua/small.lua")),
    ];

    #[test]
    fn prelude_mirrors_the_state_machine() {
        let p = prelude();
        for from in ALL_STATUSES {
            assert!(p.contains(&format!("{}='{}'", from.as_str(), from.as_str())));
            for to in ALL_STATUSES {
                let key = format!("['{from}>{to}']=true,");
                let allowed_row = p
                    .lines()
                    .find(|l| l.starts_with("local ALLOWED"))
                    .unwrap_or_default();
                let owner_row = p
                    .lines()
                    .find(|l| l.starts_with("local REQUIRES_OWNER"))
                    .unwrap_or_default();
                assert_eq!(
                    allowed_row.contains(&key),
                    from.can_transition_to(to),
                    "{from} -> {to}"
                );
                assert_eq!(
                    owner_row.contains(&key),
                    from.can_transition_to(to) && from.requires_owner_for(to),
                    "owner {from} -> {to}"
                );
            }
        }
        assert!(p.contains("['PENDING']='acquire'"));
        assert!(p.contains("['RUNNING_RECOVERY']='keep'"));
        assert!(p.contains("local FINAL = {['CONCURRENCY_CONTROLLED_FINAL']=true,['SUCCESS']=true,['FAILED']=true,}"));
    }

    #[test]
    fn scripts_only_name_statuses_of_the_state_machine() {
        // every ST.<NAME> used by a script exists; no status literal is hand-written
        for (name, body) in BODIES {
            for (i, _) in body.match_indices("ST.") {
                let rest = &body[i + 3..];
                let ident: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                    .collect();
                assert!(
                    ALL_STATUSES.iter().any(|s| s.as_str() == ident),
                    "{name}.lua uses unknown status ST.{ident}"
                );
            }
            for st in ALL_STATUSES {
                assert!(
                    !body.contains(&format!("'{}'", st.as_str())),
                    "{name}.lua hand-writes the status '{}'; use ST.{}",
                    st.as_str(),
                    st.as_str()
                );
            }
        }
    }

    #[test]
    fn scripts_define_main_and_no_globals() {
        for (name, body) in BODIES.iter().skip(1) {
            assert!(
                body.contains("local function main()"),
                "{name}.lua has no main"
            );
        }
        let s = scripts();
        assert_ne!(s.route.get_hash(), s.pick.get_hash());
    }
}
