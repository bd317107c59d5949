//! The Lua code: a prelude generated from [`InvocationStatus`], the shared
//! library (`lua/lib.lua`, `lua/index.lua`, `lua/apply.lua`) and one body
//! per atomic step.
//!
//! The steps are loaded once per server as a **Redis function library**
//! (`FUNCTION LOAD`, called with `FCALL`; Redis 7+), so the prelude and the
//! library are set up once instead of at every call. Where functions are not
//! available (an older server, or an ACL user without `FUNCTION`), every step
//! is a script of its own (`EVALSHA`) with the same text. The library's name
//! carries a hash of its text, so processes of different versions never call
//! each other's code.
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
use sha2::{Digest, Sha256};

use pynenc_model::status::ALL_STATUSES;
use pynenc_model::{
    InvocationId, InvocationStatus, Ownership, TaskCounter, TotalKey, REUSES_KEPT,
    RUN_TIME_BOUNDS_US, RUN_TIME_BUCKETS,
};

/// The shared library: its three files, in order (each uses what the ones
/// before it define).
const LIB: &str = concat!(
    include_str!("lua/lib.lua"),
    "\n",
    include_str!("lua/index.lua"),
    "\n",
    include_str!("lua/apply.lua")
);

/// One atomic step: its function name in the library, and the same step as
/// a script of its own.
pub(crate) struct Step {
    /// The step's name (`route`, `step`, ...).
    pub name: &'static str,
    /// The function of the library (`pynenc_{hash}_{name}`).
    pub function: String,
    /// The step as a script, for servers without functions.
    pub script: Script,
}

/// Every step, built once per process.
pub(crate) struct Scripts {
    /// `FUNCTION LOAD` text of the library with every step.
    pub library: String,
    pub route: Step,
    pub step: Step,
    pub set_status: Step,
    pub kill_reroute: Step,
    pub wait: Step,
    pub promote: Step,
    pub purge: Step,
    pub recover: Step,
    pub small: Step,
    pub cancel: Step,
    pub query: Step,
    pub data: Step,
}

/// The bodies of the steps, by name.
const BODIES: &[(&str, &str)] = &[
    ("route", include_str!("lua/route.lua")),
    ("step", include_str!("lua/step.lua")),
    ("set_status", include_str!("lua/set_status.lua")),
    ("kill_reroute", include_str!("lua/kill_reroute.lua")),
    ("wait", include_str!("lua/wait.lua")),
    ("promote", include_str!("lua/promote.lua")),
    ("purge", include_str!("lua/purge.lua")),
    ("recover", include_str!("lua/recover.lua")),
    ("small", include_str!("lua/small.lua")),
    ("cancel", include_str!("lua/cancel.lua")),
    ("query", include_str!("lua/query.lua")),
    ("data", include_str!("lua/data.lua")),
];

/// The steps of this process (the same text, hence the same names and SHAs,
/// for every app).
pub(crate) fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| {
        let prelude = prelude();
        let (lib_name, library) = library(&prelude);
        let step = |name: &'static str| {
            let body = BODIES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, b)| *b)
                .unwrap_or_default();
            Step {
                name,
                function: format!("{lib_name}_{name}"),
                script: Script::new(&assemble(&prelude, body)),
            }
        };
        Scripts {
            route: step("route"),
            step: step("step"),
            set_status: step("set_status"),
            kill_reroute: step("kill_reroute"),
            wait: step("wait"),
            promote: step("promote"),
            purge: step("purge"),
            recover: step("recover"),
            small: step("small"),
            cancel: step("cancel"),
            query: step("query"),
            data: step("data"),
            library,
        }
    })
}

/// The full text of one step as a script: prelude, library, body, and the
/// call of `main` with the script's KEYS and ARGV (read before the library
/// declares its own `ARGV`).
pub(crate) fn assemble(prelude: &str, body: &str) -> String {
    format!(
        "{prelude}\nlocal EVAL_KEYS, EVAL_ARGV = KEYS, ARGV\n{LIB}\n{body}\nreturn invoke(main, EVAL_KEYS, EVAL_ARGV)\n"
    )
}

/// The library's name and its `FUNCTION LOAD` text: prelude, library, then
/// each body in a block of its own that registers the step's function.
pub(crate) fn library(prelude: &str) -> (String, String) {
    let mut code = format!("{prelude}\n{LIB}\n");
    for (name, body) in BODIES {
        // the name is filled in below, once the text (hence the hash) is known
        let _ = write!(
            code,
            "do\n{body}\nredis.register_function('@LIB@_{name}', function(keys, argv) return invoke(main, keys, argv) end)\nend\n"
        );
    }
    let hash = Sha256::digest(code.as_bytes());
    let lib_name = format!("pynenc_{}", &hex::encode(hash)[..16]);
    let code = code.replace("'@LIB@_", &format!("'{lib_name}_"));
    (lib_name.clone(), format!("#!lua name={lib_name}\n{code}"))
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
    let mut out = String::from("-- generated from pynenc_model::InvocationStatus; do not edit\n");
    let _ = writeln!(
        out,
        "local STEP_BATCH = {}",
        pynenc_store::engine::STEP_BATCH
    );
    let _ = writeln!(
        out,
        "local ANCESTORS_SEARCHED = {}",
        pynenc_store::engine::ANCESTORS_SEARCHED
    );
    out.push_str("local ST = {");
    for st in ALL_STATUSES {
        let _ = write!(out, "{}={},", st.as_str(), lua_str(st.as_str()));
    }
    out.push_str("}\n");
    // every status in declaration order (counts are listed in this order)
    out.push_str("local ALL_ST = {");
    for st in ALL_STATUSES {
        let _ = write!(out, "{},", lua_str(st.as_str()));
    }
    out.push_str("}\n");
    // transitions as ALLOWED[from][to], one row per status
    out.push_str("local ALLOWED = {\n");
    for from in ALL_STATUSES {
        let _ = write!(out, "[{}]={{", lua_str(from.as_str()));
        for to in from.allowed_next() {
            let _ = write!(out, "[{}]=true,", lua_str(to.as_str()));
        }
        out.push_str("},\n");
    }
    out.push_str("}\n");
    out.push_str("local REQUIRES_OWNER = {\n");
    for from in ALL_STATUSES {
        let _ = write!(out, "[{}]={{", lua_str(from.as_str()));
        for to in from
            .allowed_next()
            .iter()
            .filter(|to| from.requires_owner_for(**to))
        {
            let _ = write!(out, "[{}]=true,", lua_str(to.as_str()));
        }
        out.push_str("},\n");
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
    totals(&mut out);
    let _ = writeln!(out, "local REUSES_KEPT = {REUSES_KEPT}");
    out
}

/// The codes of the task totals (`tot:{task}` fields, see
/// [`pynenc_model::totals`]): `TOT[status]` for the statuses counted,
/// `TOT_ROUTED`, `TOT_SUM`, and the run-time buckets (`RT_BOUNDS`, bounds
/// in µs, the codes `RT_CODES`, one more than the bounds).
fn totals(out: &mut String) {
    out.push_str("local TOT = {");
    for st in ALL_STATUSES {
        if let Some(counter) = TaskCounter::of_status(st) {
            let code = TotalKey::Counter(counter).code();
            let _ = write!(out, "[{}]='{code}',", lua_str(st.as_str()));
        }
    }
    out.push_str("}\n");
    let _ = writeln!(
        out,
        "local TOT_ROUTED = '{}'",
        TotalKey::Counter(TaskCounter::Routed).code()
    );
    let _ = writeln!(out, "local TOT_SUM = '{}'", TotalKey::RunTimeSum.code());
    out.push_str("local RT_BOUNDS = {");
    for bound in RUN_TIME_BOUNDS_US {
        let _ = write!(out, "{bound},");
    }
    out.push_str("}\n");
    out.push_str("local RT_CODES = {");
    for i in 0..RUN_TIME_BUCKETS {
        let _ = write!(out, "'{}',", TotalKey::RunTimeBucket(i).code());
    }
    out.push_str("}\n");
}

/// A decoded script reply.
pub(crate) struct Reply {
    /// Whether the script queued ids (runners may have work).
    pub enqueued: bool,
    /// Invocations that became final in the script.
    pub finals: Vec<InvocationId>,
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
        let finals = as_list(&items[2])
            .iter()
            .filter_map(as_string)
            .filter_map(|id| InvocationId::parse(&id).ok())
            .collect();
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

    fn all_texts() -> Vec<(&'static str, &'static str)> {
        let mut v = vec![("lib", LIB)];
        v.extend_from_slice(BODIES);
        v
    }

    #[test]
    fn prelude_mirrors_the_state_machine() {
        let p = prelude();
        // the row of `from` in the table `name`
        let row = |name: &str, from: InvocationStatus| -> String {
            let table = p
                .split(&format!("local {name} = {{\n"))
                .nth(1)
                .and_then(|rest| rest.split("\n}\n").next())
                .unwrap_or_default();
            table
                .lines()
                .find(|l| l.starts_with(&format!("['{from}']={{")))
                .unwrap_or_else(|| panic!("no row for {from} in {name}"))
                .to_string()
        };
        for from in ALL_STATUSES {
            assert!(p.contains(&format!("{}='{}'", from.as_str(), from.as_str())));
            let allowed_row = row("ALLOWED", from);
            let owner_row = row("REQUIRES_OWNER", from);
            for to in ALL_STATUSES {
                let key = format!("['{to}']=true,");
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
        assert!(p.contains("local FINAL = {['CONCURRENCY_CONTROLLED_FINAL']=true,['SUCCESS']=true,['FAILED']=true,['CANCELLED']=true,}"));
        assert!(p.contains("local ALL_ST = {'SCHEDULED',"));
        assert!(p.contains("'CANCELLED',}"));
    }

    #[test]
    fn scripts_only_name_statuses_of_the_state_machine() {
        // every ST.<NAME> used by a script exists; no status literal is hand-written
        for (name, body) in all_texts() {
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
        for (name, body) in BODIES {
            assert!(
                body.contains("local function main()"),
                "{name}.lua has no main"
            );
        }
        let s = scripts();
        assert_ne!(s.route.script.get_hash(), s.step.script.get_hash());
        assert!(s.library.starts_with("#!lua name=pynenc_"));
        assert!(s.route.function.starts_with("pynenc_") && s.route.function.ends_with("_route"));
        assert!(s.library.contains(&format!("'{}'", s.step.function)));
        assert!(!s.library.contains("@LIB@"));
    }
}
