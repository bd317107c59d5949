#[pynenc::task(
    max_retries = "2",
    parallel_batch_size = 0,
    retry_for = "Timeout",
    on_diff_non_key_args_raise = 1,
    reroute_on_concurrency_control = "yes",
    running_concurrency = Sometimes,
    registration_concurrency = 3,
)]
fn everything_wrong(x: i64) -> i64 {
    x
}

#[pynenc::task(max_retries = 99999999999, parallel_batch_size = 1.5)]
fn out_of_range(x: i64) -> i64 {
    x
}

#[pynenc::task(parallel_batch_size = 99999999999999999999999)]
fn too_large(x: i64) -> i64 {
    x
}

#[pynenc::task(retry_for = ["Timeout", 3])]
fn not_a_kind(x: i64) -> i64 {
    x
}

#[pynenc::task(retry_for = [" "])]
fn empty_kind(x: i64) -> i64 {
    x
}

fn main() {}
