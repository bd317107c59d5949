//! The layers of the workspace, checked: no crate depends on a crate of a
//! layer above it, and inside the runtime the configuration never imports
//! the app, task or invocation handles, the context or the runners.
//!
//! ```text
//! options → model → store → memory / sqlite / redis → pynenc (runtime) → operate
//!       ↘ macros ─────────────────────────────────────↗
//! ```

// a test: a failed expectation fails it
#![allow(clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crates directory")
        .to_path_buf()
}

/// The workspace crates (`pynenc*`) a crate depends on (not dev-dependencies).
fn pynenc_dependencies(krate: &str) -> BTreeSet<String> {
    let path = crates_dir().join(krate).join("Cargo.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let manifest: toml::Value =
        toml::from_str(&text).unwrap_or_else(|e| panic!("cannot parse {}: {e}", path.display()));
    manifest
        .get("dependencies")
        .and_then(|d| d.as_table())
        .map(|deps| {
            deps.keys()
                .filter(|k| k.starts_with("pynenc"))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn every_crate_depends_only_on_the_layers_below_it() {
    let allowed: &[(&str, &[&str])] = &[
        ("pynenc-options", &[]),
        ("pynenc-model", &["pynenc-options"]),
        ("pynenc-store", &["pynenc-model"]),
        ("pynenc-memory", &["pynenc-model", "pynenc-store"]),
        ("pynenc-sqlite", &["pynenc-model", "pynenc-store"]),
        ("pynenc-redis", &["pynenc-model", "pynenc-store"]),
        ("pynenc-postgres", &["pynenc-model", "pynenc-store"]),
        ("pynenc-macros", &["pynenc-options"]),
        (
            "pynenc",
            &[
                "pynenc-options",
                "pynenc-model",
                "pynenc-store",
                "pynenc-memory",
                "pynenc-sqlite",
                "pynenc-redis",
                "pynenc-postgres",
                "pynenc-macros",
            ],
        ),
        (
            "pynenc-operate",
            &["pynenc-model", "pynenc-store", "pynenc"],
        ),
        (
            "pynenc-monitor",
            &["pynenc-model", "pynenc-store", "pynenc", "pynenc-operate"],
        ),
        (
            "pynenc-cli",
            &["pynenc", "pynenc-operate", "pynenc-monitor"],
        ),
        ("pynenc-testservers", &[]),
    ];
    for (krate, may_use) in allowed {
        let used = pynenc_dependencies(krate);
        let may = set(may_use);
        let extra: Vec<&String> = used.difference(&may).collect();
        assert!(
            extra.is_empty(),
            "{krate} depends on {extra:?}, a layer above it or beside it (allowed: {may_use:?})"
        );
    }
    // a new crate must be placed in a layer here
    let mut listed: BTreeSet<&str> = allowed.iter().map(|(k, _)| *k).collect();
    listed.extend(["pynenc-testkit", "pynenc-bench"]);
    for entry in std::fs::read_dir(crates_dir()).expect("read crates") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        assert!(
            listed.contains(name.as_str()),
            "crate {name} has no layer in this test: add it with the crates it may use"
        );
    }
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

#[test]
fn the_configuration_never_imports_the_handles_the_context_or_the_runners() {
    let runtime = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let forbidden = [
        "crate::app",
        "crate::task",
        "crate::invocation",
        "crate::context",
        "crate::runner",
        "super::super",
    ];
    let mut checked = 0;
    for file in sources(&runtime.join("conf")) {
        let text = std::fs::read_to_string(&file).expect("read");
        for (n, line) in text.lines().enumerate() {
            for f in forbidden {
                assert!(
                    !line.contains(f),
                    "{}:{}: the configuration imports {f}: {line}",
                    file.display(),
                    n + 1
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} files of conf/ were checked");
}
