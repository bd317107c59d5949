//! `--redis-commandstats`: the server's own counters around a workload, read
//! over a plain connection of its own (a minimal RESP client, so the bench
//! needs no Redis client library), and its memory use.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// Where the server is and how to log in.
pub struct Probe {
    address: String,
    auth: Option<(Option<String>, String)>,
}

/// Counters at one moment.
pub struct Snapshot {
    /// command → (calls, µs)
    commands: BTreeMap<String, (u64, u64)>,
    /// used_cpu_sys + used_cpu_user, seconds
    cpu: f64,
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Probe {
    /// From a `redis://[user][:password@]host[:port][/db]` URL.
    pub fn new(url: &str) -> Result<Probe> {
        let Some(rest) = url.strip_prefix("redis://") else {
            bail!("--redis-commandstats reads the server over a plain redis:// URL, not {url}");
        };
        let rest = rest.split('/').next().unwrap_or_default();
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let auth = userinfo.map(|u| match u.split_once(':') {
            Some((user, pass)) => (
                Some(percent_decode(user)).filter(|u| !u.is_empty()),
                percent_decode(pass),
            ),
            None => (None, percent_decode(u)),
        });
        let address = if hostport.contains(':') {
            hostport.to_string()
        } else {
            format!("{hostport}:6379")
        };
        let probe = Probe { address, auth };
        probe
            .info("server")
            .with_context(|| format!("reading INFO from {}", probe.address))?;
        Ok(probe)
    }

    fn info(&self, section: &str) -> Result<String> {
        let stream = TcpStream::connect(&self.address)
            .with_context(|| format!("connecting to {}", self.address))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut w = stream.try_clone()?;
        let mut r = BufReader::new(stream);
        if let Some((user, pass)) = &self.auth {
            let mut args = vec!["AUTH"];
            if let Some(u) = user {
                args.push(u);
            }
            args.push(pass);
            send(&mut w, &args)?;
            let mut line = String::new();
            r.read_line(&mut line)?;
            if line.starts_with('-') {
                bail!("AUTH: {}", line.trim());
            }
        }
        send(&mut w, &["INFO", section])?;
        let mut line = String::new();
        r.read_line(&mut line)?;
        let n: usize = line
            .trim()
            .strip_prefix('$')
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| anyhow!("INFO {section}: {}", line.trim()))?;
        let mut body = vec![0u8; n + 2];
        r.read_exact(&mut body)?;
        body.truncate(n);
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// The server's `used_memory`, in bytes.
    pub fn used_memory(&self) -> Result<u64> {
        self.info("memory")?
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| anyhow!("INFO memory has no used_memory"))
    }

    /// The counters now.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let mut commands = BTreeMap::new();
        for line in self.info("commandstats")?.lines() {
            let Some((name, rest)) = line
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            let field = |key: &str| {
                rest.split(',')
                    .find_map(|kv| kv.strip_prefix(key))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            commands.insert(name.to_string(), (field("calls="), field("usec=")));
        }
        let mut cpu = 0.0;
        for line in self.info("cpu")?.lines() {
            if let Some((k, v)) = line.split_once(':') {
                if k == "used_cpu_sys" || k == "used_cpu_user" {
                    cpu += v.trim().parse::<f64>().unwrap_or(0.0);
                }
            }
        }
        Ok(Snapshot { commands, cpu })
    }

    /// Prints what the server did between two snapshots, per task.
    pub fn report(&self, phase: &str, before: &Snapshot, after: &Snapshot, tasks: u64) {
        let per = |x: f64| x / tasks.max(1) as f64;
        let mut rows: Vec<(String, u64, u64)> = after
            .commands
            .iter()
            .filter(|(name, _)| !name.starts_with("info") && name.as_str() != "auth")
            .map(|(name, &(calls, usec))| {
                let (c0, u0) = before.commands.get(name).copied().unwrap_or((0, 0));
                (
                    name.clone(),
                    calls.saturating_sub(c0),
                    usec.saturating_sub(u0),
                )
            })
            .filter(|(_, calls, _)| *calls > 0)
            .collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.2));
        let scripts = ["evalsha", "eval", "fcall", "fcall_ro", "evalsha_ro"];
        let script_calls: u64 = rows
            .iter()
            .filter(|(n, _, _)| scripts.contains(&n.as_str()))
            .map(|(_, c, _)| c)
            .sum();
        let script_usec: u64 = rows
            .iter()
            .filter(|(n, _, _)| scripts.contains(&n.as_str()))
            .map(|(_, _, u)| u)
            .sum();
        let inner: u64 = rows
            .iter()
            .filter(|(n, _, _)| !scripts.contains(&n.as_str()))
            .map(|(_, c, _)| c)
            .sum();
        println!("redis commandstats during {phase} ({tasks} tasks; commands run by scripts are counted too):");
        println!(
            "  {:<16} {:>10} {:>10} {:>12}",
            "command", "calls", "per task", "µs per task"
        );
        for (name, calls, usec) in &rows {
            println!(
                "  {:<16} {:>10} {:>10.2} {:>12.2}",
                name,
                calls,
                per(*calls as f64),
                per(*usec as f64)
            );
        }
        println!(
            "  scripts (EVALSHA/FCALL) per task {:.3}, their µs per task {:.1}; other commands per task {:.2}; server CPU per task {:.1} µs",
            per(script_calls as f64),
            per(script_usec as f64),
            per(inner as f64),
            per((after.cpu - before.cpu) * 1e6)
        );
    }
}

fn send(w: &mut impl Write, args: &[&str]) -> Result<()> {
    let mut buf = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        buf.extend_from_slice(a.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    w.write_all(&buf)?;
    Ok(())
}
