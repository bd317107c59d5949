#[pynenc::task(retries = 3)]
fn misspelled(x: i64) -> i64 {
    x
}

#[pynenc::task(max_retries = 1, max_retries = 2)]
fn twice(x: i64) -> i64 {
    x
}

fn main() {}
