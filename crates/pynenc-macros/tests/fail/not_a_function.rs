#[pynenc::task]
struct Order {
    id: u64,
}

fn main() {}
