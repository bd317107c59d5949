#[pynenc::task(registration_concurrency = Task, registration_scope = Sometimes)]
fn unknown_scope(x: i64) -> i64 {
    x
}

#[pynenc::task(registration_scope = Active)]
fn scope_without_registration_concurrency(x: i64) -> i64 {
    x
}

#[pynenc::task(running_concurrency = Task, registration_scope = "cached")]
fn scope_with_running_concurrency_only(x: i64) -> i64 {
    x
}

#[pynenc::task(
    registration_concurrency = Arguments,
    registration_scope = Cached,
    registration_cache_seconds = 0,
)]
fn cached_for_no_time(x: i64) -> i64 {
    x
}

#[pynenc::task(registration_cache_seconds = "300")]
fn cache_time_not_a_literal(x: i64) -> i64 {
    x
}

fn main() {}
