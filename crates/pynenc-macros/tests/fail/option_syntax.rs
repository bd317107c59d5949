#[pynenc::task(max_retries)]
fn no_value(x: i64) -> i64 {
    x
}

#[pynenc::task(max_retries = 1 retry_for = [])]
fn no_comma(x: i64) -> i64 {
    x
}

#[pynenc::task("max_retries" = 1)]
fn not_a_name(x: i64) -> i64 {
    x
}

#[pynenc::task(max_retries = )]
fn no_expression(x: i64) -> i64 {
    x
}

#[pynenc::task(max_retries = 1 + )]
fn half_an_expression(x: i64) -> i64 {
    x
}

fn main() {}
