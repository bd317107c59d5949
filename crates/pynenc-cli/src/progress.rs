//! Progress of long operations (a purge of a million, a retry of
//! thousands): a spinner with a count on a terminal, nothing when stderr is
//! piped or the answer is JSON.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A count of what was done so far, drawn on stderr.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Starts counting `what` (`purged`, `retried`...); drawn only when
    /// stderr is a terminal and `quiet` is false.
    pub fn start(what: &str, quiet: bool) -> Self {
        if quiet || !std::io::stderr().is_terminal() {
            return Progress { bar: None };
        }
        let bar = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {pos} ({per_sec})") {
            bar.set_style(style);
        }
        bar.set_message(what.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        Progress { bar: Some(bar) }
    }

    /// A function that counts `n` more done (for a progress hook).
    pub fn counter(&self) -> impl Fn(u64) + Send + Sync + 'static {
        let bar = self.bar.clone();
        move |n| {
            if let Some(bar) = &bar {
                bar.inc(n);
            }
        }
    }

    /// Removes the spinner.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
