#[pynenc::task]
fn never_returns(x: i64) -> ! {
    panic!("{x}")
}

#[pynenc::task]
fn borrowed_result(x: i64) -> &'static str {
    let _ = x;
    "x"
}

#[pynenc::task]
fn formatting(x: i64) -> std::fmt::Result {
    let _ = x;
    Ok(())
}

fn main() {}
