//! The behaviour scenarios, one function each, written against the public
//! API only. Numbers follow the design's list; every scenario ends by
//! replaying the history of every invocation it created (scenario 17).

mod bad_input;
mod blocking;
mod calls;
mod concurrency;
mod control;
mod data;
mod handoff;
mod lifecycle;
mod queries;
mod reactions;
mod retries;
mod totals;
mod triggers;
mod workflows;

pub use bad_input::*;
pub use blocking::*;
pub use calls::*;
pub use concurrency::*;
pub use control::*;
pub use data::*;
pub use handoff::*;
pub use lifecycle::*;
pub use queries::*;
pub use reactions::*;
pub use retries::*;
pub use totals::*;
pub use triggers::*;
pub use workflows::*;

use crate::{check_histories, ok};

/// Stops the runner and checks every history of the app.
pub(crate) async fn finish(app: &pynenc::Pynenc, runner: pynenc::SpawnedRunner) {
    ok(runner.stop().await, "stopping the runner");
    let checked = check_histories(app).await;
    assert!(checked > 0, "the scenario created no invocation");
}
