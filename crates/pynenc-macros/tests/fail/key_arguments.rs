#[pynenc::task(key_arguments = ["user"])]
fn not_a_parameter(user_id: u64, full: bool) {
    let _ = (user_id, full);
}

#[pynenc::task(key_arguments = ["user_id", "user_id"])]
fn listed_twice(user_id: u64) {
    let _ = user_id;
}

#[pynenc::task(registration_concurrency = Keys)]
fn keys_without_keys(user_id: u64) {
    let _ = user_id;
}

#[pynenc::task(running_concurrency = Keys, key_arguments = [])]
fn empty_keys(user_id: u64) {
    let _ = user_id;
}

#[pynenc::task(key_arguments = ["x"])]
fn no_parameters() {}

fn main() {}
