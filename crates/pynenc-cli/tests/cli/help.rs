//! `status graph` and the `--help` snapshots.

use std::path::Path;

use crate::support::*;

#[test]
fn status_graph_as_text_and_mermaid() {
    let dir = tempdir();
    let text = stdout(&pynenc(dir.path(), &["status", "graph"]));
    assert!(text.contains("REGISTERED"), "{text}");
    let mermaid = stdout(&pynenc(dir.path(), &["status", "graph", "--mermaid"]));
    assert!(mermaid.starts_with("stateDiagram-v2"), "{mermaid}");
    for s in pynenc::status::ALL_STATUSES {
        for n in s.allowed_next() {
            let edge = format!("    {} --> {}", s.as_str(), n.as_str());
            assert!(mermaid.contains(&edge), "missing {edge}");
        }
    }
    let v = json(dir.path(), &[], &["status", "graph"]);
    assert_eq!(
        v["statuses"].as_array().unwrap().len(),
        pynenc::status::ALL_STATUSES.len()
    );
}

/// `--help` of every command, compared with `tests/help/<command>.txt`
/// (`PYNENC_UPDATE_HELP=1` rewrites them).
#[test]
fn help_texts_match_their_snapshots() {
    let dir = tempdir();
    let snapshots = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("help");
    let update = std::env::var("PYNENC_UPDATE_HELP").as_deref() == Ok("1");
    let commands: &[&[&str]] = &[
        &[],
        &["runner", "start"],
        &["call"],
        &["list"],
        &["show"],
        &["tree"],
        &["tasks"],
        &["runners"],
        &["queue"],
        &["apps"],
        &["triggers"],
        &["cancel"],
        &["rerun"],
        &["retry-failed"],
        &["purge"],
        &["config"],
        &["status", "graph"],
        &["watch"],
        &["monitor"],
    ];
    for c in commands {
        let args: Vec<&str> = c.iter().copied().chain(["--help"]).collect();
        let o = pynenc(dir.path(), &args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        let name = if c.is_empty() {
            "pynenc".to_string()
        } else {
            c.join("-")
        };
        let file = snapshots.join(format!("{name}.txt"));
        let text = stdout(&o);
        if update {
            std::fs::create_dir_all(&snapshots).unwrap();
            std::fs::write(&file, &text).unwrap();
        } else {
            let expected = std::fs::read_to_string(&file).unwrap_or_else(|e| {
                panic!("{}: {e} (PYNENC_UPDATE_HELP=1 writes it)", file.display())
            });
            assert_eq!(
                text,
                expected,
                "`pynenc {}` changed (PYNENC_UPDATE_HELP=1 rewrites {})",
                args.join(" "),
                file.display()
            );
        }
    }
}
