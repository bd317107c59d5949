//! Every error `#[pynenc::task]` reports, compiled for real: the messages
//! and where they point are kept as `.stderr` snapshots next to each case
//! (regenerate them with `TRYBUILD=overwrite` after a deliberate change).

#[test]
fn every_macro_error_is_a_clear_compile_error() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/fail/*.rs");
}
