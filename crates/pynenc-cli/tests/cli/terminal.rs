//! A pseudo-terminal: colour, and the purge that asks first.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::*;

/// Runs the standalone binary in a pseudo-terminal (`script`, from
/// util-linux) with `input` typed in; its exit code and what the terminal
/// showed. `None` when `script` is not installed.
fn in_terminal(dir: &Path, args: &[&str], input: &str) -> Option<(Option<i32>, String)> {
    let quoted: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_pynenc"))
        .chain(args.iter().copied())
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    let mut child = Command::new("script")
        .args(["-qfec", &quoted.join(" "), "/dev/null"])
        .current_dir(dir)
        .env_remove("NO_COLOR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    std::io::Write::write_all(child.stdin.as_mut()?, input.as_bytes()).ok()?;
    let o = child.wait_with_output().ok()?;
    Some((o.status.code(), stdout(&o)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_gets_colour_and_a_purge_asks_first() {
    let dir = tempdir();
    let db = dir.path().join("tty.db");
    let app = sqlite_app(&db);
    seed(&app).await;
    let db_text = db.display().to_string();
    let conn = ["--sqlite-path", db_text.as_str(), "--app", APP];
    let Some((code, shown)) = in_terminal(dir.path(), &[&conn[..], &["list"]].concat(), "") else {
        eprintln!("skipped: `script` (util-linux) is needed for a pseudo-terminal");
        return;
    };
    assert_eq!(code, Some(0), "{shown}");
    assert!(
        shown.contains("\x1b[32mSUCCESS\x1b[0m"),
        "no colour on a terminal: {shown}"
    );
    // piped, without NO_COLOR: no colour
    let piped = command(
        Path::new(env!("CARGO_BIN_EXE_pynenc")),
        dir.path(),
        &[&conn[..], &["list"]].concat(),
    )
    .env_remove("NO_COLOR")
    .output()
    .unwrap();
    assert!(
        !stdout(&piped).contains('\x1b'),
        "colour in a pipe: {}",
        stdout(&piped)
    );

    // the purge shows what will go and asks; "n" deletes nothing
    let purge = [&conn[..], &["purge", "--status", "success"]].concat();
    let (code, shown) = in_terminal(dir.path(), &purge, "n\n").unwrap();
    assert_eq!(code, Some(4), "{shown}");
    assert!(
        shown.contains("delete 4 invocations (records, results, histories)? [y/N]"),
        "{shown}"
    );
    assert!(
        shown.contains("not confirmed: nothing was deleted"),
        "{shown}"
    );
    assert_eq!(
        json(dir.path(), &conn, &["list", "--status", "success"])["items"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    let (code, shown) = in_terminal(dir.path(), &purge, "y\n").unwrap();
    assert_eq!(code, Some(0), "{shown}");
    assert!(shown.contains("4 invocations deleted"), "{shown}");
    assert!(
        json(dir.path(), &conn, &["list", "--status", "success"])["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}
