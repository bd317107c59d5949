#[pynenc::task]
unsafe fn danger(x: i64) -> i64 {
    x
}

#[pynenc::task]
fn generic<T>(x: T) -> i64 {
    let _ = x;
    1
}

#[pynenc::task]
fn borrows<'a>(x: i64) -> i64 {
    x
}

#[pynenc::task]
fn bounded(x: i64) -> i64
where
    i64: Copy,
{
    x
}

struct Jobs;

impl Jobs {
    #[pynenc::task]
    fn method(&self, x: i64) -> i64 {
        x
    }
}

fn main() {}
