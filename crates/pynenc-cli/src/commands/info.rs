//! `config` and `status graph`: what the app is configured with, and the
//! state machine every invocation follows. Neither opens the backend.

use pynenc::status::ALL_STATUSES;
use pynenc::{InvocationStatus, PynencBuilder};
use serde_json::json;

use crate::connect::config_of;
use crate::error::Result;
use crate::output::{line, Out, Table};

/// `config`: every effective value with its source, secrets masked.
pub(crate) fn config(out: &Out, builder: &PynencBuilder) -> Result<()> {
    let conf = config_of(builder)?;
    let entries = conf.described();
    if out.json {
        let values: Vec<_> = entries
            .iter()
            .map(|e| json!({ "key": e.key, "value": e.value, "source": e.source.to_string() }))
            .collect();
        return out.json(&json!({ "config": values }));
    }
    let mut t = Table::new(&["KEY", "VALUE", "SOURCE"]);
    for e in entries {
        t.row(vec![e.key, e.value.to_string(), e.source.to_string()]);
    }
    t.print(out, "")
}

/// `status graph`: each status, whether it is final, and where it can go.
pub(crate) fn graph(out: &Out, mermaid: bool) -> Result<()> {
    if out.json {
        let statuses: Vec<_> = ALL_STATUSES
            .iter()
            .map(|s| {
                json!({
                    "status": s.as_lower_str(),
                    "initial": InvocationStatus::initial().contains(s),
                    "final": s.is_final(),
                    "next": s.allowed_next().iter().map(|n| n.as_lower_str()).collect::<Vec<_>>(),
                })
            })
            .collect();
        return out.json(&json!({ "statuses": statuses }));
    }
    if mermaid {
        line("stateDiagram-v2")?;
        for s in InvocationStatus::initial() {
            line(&format!("    [*] --> {}", s.as_str()))?;
        }
        for s in ALL_STATUSES {
            for n in s.allowed_next() {
                line(&format!("    {} --> {}", s.as_str(), n.as_str()))?;
            }
            if s.is_final() && s.allowed_next().is_empty() {
                line(&format!("    {} --> [*]", s.as_str()))?;
            }
        }
        return Ok(());
    }
    let mut t = Table::new(&["STATUS", "KIND", "CAN GO TO"]);
    for s in ALL_STATUSES {
        let kind = if InvocationStatus::initial().contains(&s) {
            "initial"
        } else if s.is_final() {
            "final"
        } else {
            ""
        };
        let next: Vec<String> = s.allowed_next().iter().map(|n| out.status(*n)).collect();
        t.row(vec![out.status(s), kind.to_string(), next.join(", ")]);
    }
    t.print(out, "")
}
