//! The tasks the conformance suite runs.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use pynenc::TaskError;

fn attempts() -> &'static Mutex<HashMap<String, u32>> {
    static A: OnceLock<Mutex<HashMap<String, u32>>> = OnceLock::new();
    A.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Counts a run of `key` and returns the number of runs so far.
pub fn count_run(key: &str) -> u32 {
    let mut map = attempts().lock().unwrap_or_else(|e| e.into_inner());
    let n = map.entry(key.to_string()).or_default();
    *n += 1;
    *n
}

/// How many times `key` ran.
pub fn runs_of(key: &str) -> u32 {
    attempts()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(key)
        .copied()
        .unwrap_or(0)
}

fn events() -> &'static Mutex<Vec<(String, String, i64)>> {
    static E: OnceLock<Mutex<Vec<(String, String, i64)>>> = OnceLock::new();
    E.get_or_init(|| Mutex::new(Vec::new()))
}

/// Records an event (`group`, `label`) with the current time.
pub fn record(group: &str, label: &str) {
    events().lock().unwrap_or_else(|e| e.into_inner()).push((
        group.to_string(),
        label.to_string(),
        pynenc::Timestamp::now().as_micros(),
    ));
}

/// The events of a group, in order: (label, time µs).
pub fn events_of(group: &str) -> Vec<(String, i64)> {
    events()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|(g, _, _)| g == group)
        .map(|(_, l, t)| (l.clone(), *t))
        .collect()
}

/// Adds two numbers.
#[pynenc::task]
pub async fn add(x: i64, y: i64) -> i64 {
    x + y
}

/// Logs one line from inside the task, then returns `x`.
#[pynenc::task]
pub async fn logged(x: i64) -> i64 {
    tracing::info!(x, "inside the task");
    x
}

/// Adds two numbers, synchronously (runs on a blocking thread).
#[pynenc::task]
pub fn add_sync(x: i64, y: i64) -> i64 {
    x + y
}

/// Fails with a retriable error the first `fail_times` runs of `key`.
#[pynenc::task(max_retries = 2, retry_for = ["Flaky"])]
pub async fn flaky(key: String, fail_times: u32) -> Result<u32, TaskError> {
    let run = count_run(&key);
    if run <= fail_times {
        Err(TaskError::new("Flaky", format!("run {run} of {key} fails")))
    } else {
        Ok(run)
    }
}

/// Always asks for a retry.
#[pynenc::task(max_retries = 2)]
pub async fn always_retry(key: String) -> Result<(), TaskError> {
    let run = count_run(&key);
    Err(TaskError::retry(format!("run {run} asks for a retry")))
}

/// Fails with an error of the given kind (not retriable).
#[pynenc::task(max_retries = 3)]
pub async fn fail_with(kind: String, message: String) -> Result<(), TaskError> {
    Err(TaskError::new(kind, message))
}

/// Panics.
#[pynenc::task]
pub async fn panics(message: String) -> i64 {
    panic!("{message}")
}

/// Panics in a sync body.
#[pynenc::task]
pub fn panics_sync(message: String) -> i64 {
    panic!("{message}")
}

/// Calls `add` and waits for it.
#[pynenc::task]
pub async fn add_via_child(x: i64, y: i64) -> Result<i64, pynenc::PynencError> {
    add::call(x, y).await?.result().await
}

/// Calls `add_sync` from a sync body and waits for it.
#[pynenc::task]
pub fn add_via_child_sync(x: i64, y: i64) -> Result<i64, pynenc::PynencError> {
    pynenc::block_on(async { add_sync::call(x, y).await?.result().await })
}

/// A chain of `depth` nested calls, each waiting on the next.
#[pynenc::task]
pub async fn chain(depth: u32) -> Result<u32, pynenc::PynencError> {
    if depth == 0 {
        return Ok(0);
    }
    Ok(chain::call(depth - 1).await?.result().await? + 1)
}

/// Sums `add(i, i)` for i in 0..n through `parallelize`.
#[pynenc::task]
pub async fn fan_out(n: i64) -> Result<i64, pynenc::PynencError> {
    let group = add::parallelize((0..n).map(|i| (i, i))).await?;
    Ok(group.results().await?.into_iter().sum())
}

/// Doubles, routed by `parallelize` in batches of 7.
#[pynenc::task(parallel_batch_size = 7)]
pub async fn double(x: i64) -> i64 {
    x * 2
}

/// Sleeps `ms` and records start/end in `group` (running concurrency per task, re-routed).
#[pynenc::task(running_concurrency = Task)]
pub async fn exclusive(group: String, label: String, ms: u64) -> String {
    record(&group, &format!("start:{label}"));
    tokio::time::sleep(Duration::from_millis(ms)).await;
    record(&group, &format!("end:{label}"));
    label
}

/// Like `exclusive`, but a controlled invocation ends `CONCURRENCY_CONTROLLED_FINAL`.
#[pynenc::task(running_concurrency = Task, reroute_on_concurrency_control = false)]
pub async fn exclusive_final(group: String, label: String, ms: u64) -> String {
    record(&group, &format!("start:{label}"));
    tokio::time::sleep(Duration::from_millis(ms)).await;
    record(&group, &format!("end:{label}"));
    label
}

/// Running concurrency by key: only `key` counts.
#[pynenc::task(running_concurrency = Keys, key_arguments = ["key"])]
pub async fn keyed(group: String, key: String, label: String, ms: u64) -> String {
    let _ = &key;
    record(&group, &format!("start:{label}"));
    tokio::time::sleep(Duration::from_millis(ms)).await;
    record(&group, &format!("end:{label}"));
    label
}

/// Registration concurrency per task.
#[pynenc::task(registration_concurrency = Task)]
pub async fn reg_task(x: i64) -> i64 {
    x
}

/// Registration concurrency per arguments.
#[pynenc::task(registration_concurrency = Arguments)]
pub async fn reg_args(x: i64) -> i64 {
    x
}

/// Registration concurrency per key, raising on different other arguments.
#[pynenc::task(registration_concurrency = Keys, key_arguments = ["k"], on_diff_non_key_args_raise = true)]
pub async fn reg_keys_raise(k: String, v: i64) -> i64 {
    let _ = k;
    v
}

/// Registration concurrency per key, reusing despite different other arguments.
#[pynenc::task(registration_concurrency = Keys, key_arguments = ["k"])]
pub async fn reg_keys_reuse(k: String, v: i64) -> i64 {
    let _ = k;
    v
}

/// a(x) calls b(x).
#[pynenc::task]
pub async fn cycle_a(x: i64) -> Result<i64, pynenc::PynencError> {
    cycle_b::call(x).await?.result().await
}

/// b(x) calls a(x): a cycle.
#[pynenc::task]
pub async fn cycle_b(x: i64) -> Result<i64, pynenc::PynencError> {
    cycle_a::call(x).await?.result().await
}

/// a(x) → b(x) → c(x) → a(x): a cycle of three (through `three_b` and `three_c`).
#[pynenc::task]
pub async fn three_a(x: i64) -> Result<i64, pynenc::PynencError> {
    three_b::call(x).await?.result().await
}

/// The second call of the cycle of three.
#[pynenc::task]
pub async fn three_b(x: i64) -> Result<i64, pynenc::PynencError> {
    three_c::call(x).await?.result().await
}

/// The third call of the cycle of three: it calls `three_a` again.
#[pynenc::task]
pub async fn three_c(x: i64) -> Result<i64, pynenc::PynencError> {
    three_a::call(x).await?.result().await
}

/// Calls itself with the same argument.
#[pynenc::task]
pub async fn self_call(x: i64) -> Result<i64, pynenc::PynencError> {
    self_call::call(x).await?.result().await
}

/// Fibonacci by recursion on different arguments: no cycle.
#[pynenc::task]
pub async fn fib(n: u32) -> Result<u64, pynenc::PynencError> {
    if n < 2 {
        return Ok(n as u64);
    }
    let a = fib::call(n - 1).await?;
    let b = fib::call(n - 2).await?;
    Ok(a.result().await? + b.result().await?)
}

/// Records its label in `group` when it runs.
#[pynenc::task]
pub async fn filler(group: String, label: String, ms: u64) -> String {
    record(&group, &label);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    label
}

/// Calls `filler(group, "child")` and waits for it (blocking control).
#[pynenc::task]
pub async fn parent_of_child(group: String) -> Result<String, pynenc::PynencError> {
    record(&group, "parent");
    filler::call(group, "child".into(), 0).await?.result().await
}

/// Adds `x` and `y` in a child that first sleeps `ms` milliseconds, and
/// waits for it (a parent PAUSED on its child meanwhile).
#[pynenc::task]
pub async fn add_via_slow_child(x: i64, y: i64, ms: u64) -> Result<i64, pynenc::PynencError> {
    let key = format!("slow-child-{x}-{y}-{ms}");
    sleeper::call(key, ms).await?.result().await?;
    add::call(x, y).await?.result().await
}

/// Sleeps `ms` milliseconds.
#[pynenc::task]
pub async fn sleeper(key: String, ms: u64) -> u64 {
    count_run(&key);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    ms
}

/// The length of a string argument.
#[pynenc::task]
pub async fn byte_len(data: String) -> usize {
    data.len()
}

/// Takes no arguments.
#[pynenc::task]
pub async fn constant() -> u8 {
    7
}

/// Counts its runs in a file (works across processes) and aborts the whole
/// process on the first `crash_times` runs.
#[pynenc::task(max_retries = 1, retry_for = ["ProcessCrashed"])]
pub fn crash_then_succeed(marker: String, crash_times: u32) -> u32 {
    let runs = std::fs::read_to_string(&marker)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(0)
        + 1;
    let _ = std::fs::write(&marker, runs.to_string());
    if runs <= crash_times {
        std::process::abort();
    }
    runs
}

/// Aborts the process running it.
#[pynenc::task]
pub fn abort_process() -> u32 {
    std::process::abort()
}

/// Dies of a segmentation fault: writes through a null pointer.
#[pynenc::task]
pub fn segfault() -> u32 {
    let p: *mut u32 = std::hint::black_box(std::ptr::null_mut());
    // SAFETY: deliberately unsound, to crash the process running the task.
    unsafe { p.write_volatile(1) };
    0
}

/// Returns the process id of the process running it.
#[pynenc::task]
pub async fn whoami(i: u32) -> (u32, u32) {
    (i, std::process::id())
}

/// Sleeps `ms` milliseconds; returns the process id of the process running
/// it and when its body began and ended (µs since the epoch).
#[pynenc::task]
pub async fn timed_body(i: u32, ms: u64) -> (u32, i64, i64) {
    let _ = i;
    let began = pynenc::Timestamp::now().as_micros();
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    (
        std::process::id(),
        began,
        pynenc::Timestamp::now().as_micros(),
    )
}

/// The chaos workload: sleeps `ms` milliseconds and returns `2 * i`.
#[pynenc::task]
pub async fn chaos_work(i: u64, ms: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    2 * i
}

/// Counts its runs under `key`, sleeps `ms`, returns `x * 10`; a second call
/// with the same arguments joins one that is queued or running.
#[pynenc::task(registration_concurrency = Arguments, registration_scope = Active)]
pub async fn shared_leaf(key: String, x: i64, ms: u64) -> i64 {
    count_run(&key);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    x * 10
}

/// Waits `delay_ms`, then calls `shared_leaf(key, 1, 300)` and returns its result.
#[pynenc::task]
pub async fn diamond_side(
    key: String,
    side: String,
    delay_ms: u64,
) -> Result<i64, pynenc::PynencError> {
    let _ = side;
    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    shared_leaf::call(key, 1, 300).await?.result().await
}

/// a → b, c → d(1): two sides calling the same leaf, the second while the
/// first's leaf runs.
#[pynenc::task]
pub async fn diamond_top(key: String) -> Result<i64, pynenc::PynencError> {
    let b = diamond_side::call(key.clone(), "b".into(), 0).await?;
    let c = diamond_side::call(key, "c".into(), 100).await?;
    Ok(b.result().await? + c.result().await?)
}

/// Counts its runs under `key`; a success is reused for a minute.
#[pynenc::task(registration_concurrency = Arguments, registration_scope = Cached, registration_cache_seconds = 60)]
pub async fn cached_leaf(key: String, x: i64) -> i64 {
    count_run(&key);
    x + 1
}

/// A large string of `len` bytes in a fixed pattern (see [`is_big_value`]).
pub fn big_value(len: usize) -> String {
    (0..len)
        .map(|k| char::from(b'a' + (k % 23) as u8))
        .collect()
}

/// Whether `s` is [`big_value`] of `len` bytes: its length, its first and
/// last kilobyte and 4,096 bytes spread over it.
pub fn is_big_value(s: &str, len: usize) -> bool {
    let b = s.as_bytes();
    let at = |k: usize| b[k] == b'a' + (k % 23) as u8;
    b.len() == len
        && (0..len.min(1024)).all(at)
        && (len.saturating_sub(1024)..len).all(at)
        && (0..4096)
            .map(|j| j * (len / 4096).max(1))
            .filter(|&k| k < len)
            .all(at)
}

/// Checks a large argument, serialized once for all calls:
/// `(i, its length, whether it is big_value(len))`.
#[pynenc::task]
pub async fn check_big(data: pynenc::Shared<String>, len: usize, i: u32) -> (u32, usize, bool) {
    (i, data.len(), is_big_value(&data, len))
}

/// Returns `big_value(len)`: a large result.
#[pynenc::task]
pub async fn big_result(len: usize) -> String {
    big_value(len)
}

/// The length of an argument that always stays in the record.
#[pynenc::task(inline_arguments = ["data"])]
pub async fn inline_len(data: String) -> usize {
    data.len()
}

/// The length of an argument stored from 1,000 bytes on.
#[pynenc::task(data_store_min_size_bytes = 1000)]
pub async fn low_threshold_len(data: String) -> usize {
    data.len()
}

/// Appends `line` to the file at `path` (a count of runs across processes).
#[pynenc::task]
pub async fn append_line(path: String, line: String) -> Result<(), TaskError> {
    append_to(&path, &line)
}

/// Appends `line` to the file `path` (made if missing) in one write:
/// appends of several processes do not interleave (`writeln!` may write
/// the line and its end apart).
fn append_to(path: &str, line: &str) -> Result<(), TaskError> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| TaskError::new("IoError", format!("cannot open {path}: {e}")))?;
    f.write_all(format!("{line}\n").as_bytes())
        .map_err(|e| TaskError::new("IoError", format!("cannot write {path}: {e}")))
}

/// Records `label` in `group` (what a trigger's reaction does in the tests).
#[pynenc::task]
pub async fn reaction(group: String, label: String) -> String {
    record(&group, &label);
    label
}

/// Emits the event `name` with `{"from": "a task"}` from inside a task.
#[pynenc::task]
pub async fn emit_from_task(name: String) -> Result<String, pynenc::PynencError> {
    let app = pynenc::context::current_app()?;
    let id = app
        .emit_event(&name, serde_json::json!({"from": "a task"}))
        .await?;
    Ok(id.to_string())
}

/// A step of the workflows below: counts its runs under `key`, returns
/// `i * 10`.
#[pynenc::task]
pub async fn wf_step(key: String, i: u32) -> u64 {
    count_run(&key);
    u64::from(i) * 10
}

/// A workflow: a group of three steps in parallel, then `n` steps one
/// after the other; its first run stops (a retriable `Interrupted`) before
/// step `stop_after` of the sequence, so the second run replays what the
/// first recorded. Returns the sum of the steps' results.
#[pynenc::task(workflow = true, max_retries = 1, retry_for = ["Interrupted"])]
pub async fn wf_steps(key: String, n: u32, stop_after: u32) -> Result<u64, TaskError> {
    let run = count_run(&format!("{key}/workflow"));
    let group = wf_step::parallelize((0..3).map(|g| (format!("{key}/g{g}"), g))).await?;
    let mut total: u64 = group.results().await?.into_iter().sum();
    for i in 0..n {
        if run == 1 && i == stop_after {
            return Err(TaskError::new("Interrupted", "the first run stops here"));
        }
        total += wf_step::call(format!("{key}/s{i}"), i)
            .await?
            .result()
            .await?;
    }
    Ok(total)
}

/// A workflow that is not deterministic: its first step's argument is the
/// number of the run, so the second run asks for another call than the
/// recorded one.
#[pynenc::task(workflow = true, max_retries = 1, retry_for = ["Interrupted"])]
pub async fn wf_diverge(key: String) -> Result<u64, TaskError> {
    let run = count_run(&format!("{key}/workflow"));
    let first = wf_step::call(format!("{key}/a"), run)
        .await?
        .result()
        .await?;
    if run == 1 {
        return Err(TaskError::new("Interrupted", "the first run stops here"));
    }
    Ok(first)
}

/// A step that writes `{i}` on a line of `path` when it starts, then
/// sleeps `ms` milliseconds; returns `i * 10`.
#[pynenc::task]
pub async fn wf_file_step(path: String, i: u32, ms: u64) -> Result<u64, TaskError> {
    append_to(&path, &i.to_string())?;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(u64::from(i) * 10)
}

/// A workflow of `n` steps [`wf_file_step`] one after the other; returns
/// the sum of their results.
#[pynenc::workflow]
pub async fn wf_file(path: String, n: u32, ms: u64) -> Result<u64, TaskError> {
    let mut total = 0;
    for i in 0..n {
        total += wf_file_step::call(path.clone(), i, ms)
            .await?
            .result()
            .await?;
    }
    Ok(total)
}

/// A workflow that sleeps `ms` between two steps; its first run stops
/// (a retriable `Interrupted`) right after the sleep, so the second run
/// gets the sleep back instead of sleeping again. Returns 30.
#[pynenc::task(workflow = true, max_retries = 1, retry_for = ["Interrupted"])]
pub async fn wf_sleepy(key: String, ms: u64) -> Result<u64, TaskError> {
    let run = count_run(&format!("{key}/workflow"));
    let a = wf_step::call(format!("{key}/a"), 1).await?.result().await?;
    pynenc::workflow::sleep(Duration::from_millis(ms)).await?;
    if run == 1 {
        return Err(TaskError::new("Interrupted", "the first run stops here"));
    }
    let b = wf_step::call(format!("{key}/b"), 2).await?.result().await?;
    Ok(a + b)
}

/// A workflow that takes the time, a random number and a UUID, keeps them
/// as data on its first run and stops there (a retriable `Interrupted`);
/// its second run returns, as JSON, what it took then and what its first
/// run kept: `[micros, random, uuid, kept, a key never set]`.
#[pynenc::task(workflow = true, max_retries = 1, retry_for = ["Interrupted"])]
pub async fn wf_values(key: String) -> Result<String, TaskError> {
    let run = count_run(&format!("{key}/workflow"));
    let now = pynenc::workflow::now().await?;
    let micros = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let random = pynenc::workflow::random().await?;
    let id = pynenc::workflow::uuid().await?.to_string();
    let taken = (micros, random, id);
    if run == 1 {
        pynenc::workflow::set_data("first", &taken).await?;
        return Err(TaskError::new("Interrupted", "the first run stops here"));
    }
    let kept: Option<(u64, f64, String)> = pynenc::workflow::get_data("first").await?;
    let never: Option<u32> = pynenc::workflow::get_data("never set").await?;
    serde_json::to_string(&(taken.0, taken.1, taken.2, kept, never))
        .map_err(|e| TaskError::new("Json", e.to_string()))
}

/// A workflow calling a workflow: [`wf_steps`] (two steps after its group)
/// then [`wf_step`]; its first run stops (a retriable `Interrupted`) after
/// the child workflow ended, so the second run gets the child's result
/// back. Returns 90.
#[pynenc::task(workflow = true, max_retries = 1, retry_for = ["Interrupted"])]
pub async fn wf_parent(key: String) -> Result<u64, TaskError> {
    let run = count_run(&format!("{key}/workflow"));
    let child = wf_steps::call(format!("{key}/child"), 2, u32::MAX)
        .await?
        .result()
        .await?;
    if run == 1 {
        return Err(TaskError::new("Interrupted", "the first run stops here"));
    }
    let last = wf_step::call(format!("{key}/last"), 5)
        .await?
        .result()
        .await?;
    Ok(child + last)
}

/// A workflow whose one step sleeps `ms` milliseconds ([`sleeper`]).
#[pynenc::task(workflow = true)]
pub async fn wf_slow(key: String, ms: u64) -> Result<u64, TaskError> {
    Ok(sleeper::call(key, ms).await?.result().await?)
}

/// A workflow waiting for two signals: `early` (a text) and `late` (a
/// number); its first run stops (a retriable `Interrupted`) after both, so
/// the second run gets them back without waiting. Returns
/// `"{early}-{late}@{workflow id}"`.
#[pynenc::workflow(max_retries = 1, retry_for = ["Interrupted"])]
pub async fn wf_signals(key: String) -> Result<String, TaskError> {
    let run = count_run(&format!("{key}/workflow"));
    let early: String = pynenc::workflow::wait_signal("early").await?;
    let late: u32 = pynenc::workflow::wait_signal("late").await?;
    if run == 1 {
        return Err(TaskError::new("Interrupted", "the first run stops here"));
    }
    Ok(format!("{early}-{late}@{}", pynenc::workflow::id()?))
}

/// A workflow of `n` steps that then waits for the signal `go`; its first
/// run stops (a retriable `Interrupted`) after the signal, so the second
/// run replays the `n` steps and gets the signal back. Returns the sum.
#[pynenc::task(workflow = true, max_retries = 1, retry_for = ["Interrupted"])]
pub async fn wf_replay(key: String, n: u32) -> Result<u64, TaskError> {
    let run = count_run(&format!("{key}/workflow"));
    let mut total = 0;
    for i in 0..n {
        total += wf_step::call(format!("{key}/{i}"), i)
            .await?
            .result()
            .await?;
    }
    let _: u32 = pynenc::workflow::wait_signal("go").await?;
    if run == 1 {
        return Err(TaskError::new("Interrupted", "the first run stops here"));
    }
    Ok(total)
}

/// Calls `filler(group, "child")`, waits for it, then records `resumed`
/// (the order shows when the parent went on).
#[pynenc::task]
pub async fn parent_then_resumed(group: String) -> Result<String, pynenc::PynencError> {
    record(&group, "parent");
    let child = filler::call(group.clone(), "child".into(), 0)
        .await?
        .result()
        .await?;
    record(&group, "resumed");
    Ok(child)
}
