//! Waiting on an invocation without taking its result: until it is final,
//! or until it reaches a status.

use std::time::{Duration, Instant};

use pynenc_model::InvocationStatus;
use serde::de::DeserializeOwned;

use super::{Invocation, UntypedInvocation};
use crate::exceptions::{PynencError, Result};

impl<R: DeserializeOwned + Send + 'static> Invocation<R> {
    /// Waits until the invocation is final and returns its final status
    /// (whatever it is: a failure is not an error here). Inside a task the
    /// waiting invocation is paused meanwhile, as with `result()`.
    ///
    /// # Errors
    ///
    /// The invocation was purged, or the backend failed.
    pub async fn wait(&self) -> Result<InvocationStatus> {
        if let UntypedInvocation::Distributed(d) = self.untyped() {
            if let Some(known) = &d.known {
                return Ok(known.status);
            }
            d.app.wait_for(&[*self.invocation_id()]).await?;
        }
        self.status().await
    }

    /// Waits until the invocation is in one of `statuses`, for at most
    /// `timeout`, and returns the status it reached. It is woken by the
    /// backend when the status changes (memory: the step itself; SQLite:
    /// this process's commits, and adaptive polling of one row for other
    /// processes'; Redis: a message the steps publish for watched
    /// invocations), not by polling a loop of its own.
    ///
    /// # Errors
    ///
    /// [`PynencError::StatusUnreachable`] when it became final in another
    /// status; [`PynencError::WaitTimeout`] when `timeout` passed; the
    /// invocation was purged, or the backend failed.
    pub async fn wait_for_status(
        &self,
        statuses: &[InvocationStatus],
        timeout: Duration,
    ) -> Result<InvocationStatus> {
        let start = Instant::now();
        loop {
            let status = self.status().await?;
            if statuses.contains(&status) {
                return Ok(status);
            }
            if status.is_final() {
                return Err(PynencError::StatusUnreachable {
                    invocation_id: *self.invocation_id(),
                    expected: statuses.to_vec(),
                    status,
                });
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(PynencError::WaitTimeout {
                    invocation_id: *self.invocation_id(),
                    expected: statuses.to_vec(),
                    status,
                    timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                });
            }
            let UntypedInvocation::Distributed(d) = self.untyped() else {
                // a dev-mode invocation is final when it is made
                continue;
            };
            // a timeout here is checked by the loop
            d.app
                .coordination()
                .wait_status_change(self.invocation_id(), status, left)
                .await?;
        }
    }
}
