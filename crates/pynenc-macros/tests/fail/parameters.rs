use std::fmt::Debug;

#[pynenc::task]
fn unnamed(_: i64) {}

#[pynenc::task]
fn pattern((a, b): (i64, i64)) -> i64 {
    a + b
}

#[pynenc::task]
fn by_reference(name: &str) -> usize {
    name.len()
}

#[pynenc::task]
fn opaque(value: impl Debug) {
    let _ = value;
}

#[pynenc::task]
fn boxed(value: Box<dyn Debug>) {
    let _ = value;
}

#[pynenc::task]
fn pointer(value: *const u8) {
    let _ = value;
}

#[pynenc::task]
fn callback(f: fn(i64) -> i64) -> i64 {
    f(1)
}

#[pynenc::task]
fn borrowed_cow<'a>(text: std::borrow::Cow<'a, str>) -> usize {
    text.len()
}

#[pynenc::task]
fn inferred(x: _) {
    let _ = x;
}

fn main() {}
