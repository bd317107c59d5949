//! Triggers that react, on the embedded in-memory backend: a receipt for
//! every large charge (made from the charge's result), an alert for every
//! charge that fails for good with a timeout in one region, an audit line
//! for every retry, and a welcome mail for every `user.signed_up` event.
//!
//! ```text
//! cargo run -p pynenc --example reactions
//! ```

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use pynenc::{trigger_arguments, InvocationStatus, Pynenc, TaskError, Trigger};
use serde_json::json;

static ATTEMPTS: AtomicU32 = AtomicU32::new(0);

/// Charges an order; the EU gateway times out, and the first attempt of
/// order 3 finds the gateway busy (retried).
#[pynenc::task(max_retries = 2, retry_for = ["Busy"])]
async fn charge(order: u32, region: String, amount: u64) -> Result<u64, TaskError> {
    if region == "eu" {
        return Err(TaskError::new(
            "Timeout",
            format!("order {order}: no answer"),
        ));
    }
    if order == 3 && ATTEMPTS.fetch_add(1, Ordering::SeqCst) == 0 {
        return Err(TaskError::new("Busy", "the gateway is busy"));
    }
    Ok(amount)
}

/// What every reaction does here: prints a line.
#[pynenc::task]
async fn notify(channel: String, text: String) -> String {
    println!("    [{channel}] {text}");
    text
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let app = Pynenc::builder()
        .app_id("reactions-example")
        .trigger(
            Trigger::on_result(
                charge::task(),
                |amount: &u64| *amount >= 100,
                notify::task(),
                (String::new(), String::new()),
            )
            .named("receipt for large charges")
            .arguments_from(|src| {
                let text = format!(
                    "receipt: order {} charged {}",
                    src.arguments["order"],
                    src.result.clone().unwrap_or_default()
                );
                Ok(trigger_arguments([
                    ("channel", json!("mail")),
                    ("text", json!(text)),
                ]))
            }),
        )
        .trigger(
            Trigger::on_exception(
                charge::task(),
                &["Timeout"],
                notify::task(),
                ("pager".to_string(), "an EU charge timed out".to_string()),
            )
            .when_argument("region", |v| v == &json!("eu")),
        )
        .trigger(Trigger::on_status(
            charge::task(),
            &[InvocationStatus::Retry],
            notify::task(),
            ("audit".to_string(), "a charge is retried".to_string()),
        ))
        .trigger(
            Trigger::on_event(
                "user.signed_up",
                notify::task(),
                (String::new(), String::new()),
            )
            .arguments_from(|src| {
                let email = src.event_payload("email");
                let text = format!("welcome, {}", email.as_str().unwrap_or("(no email)"));
                Ok(trigger_arguments([
                    ("channel", json!("mail")),
                    ("text", json!(text)),
                ]))
            }),
        )
        .build()?;
    let runner = app.runner().spawn();

    println!("charges (each reaction prints as it runs):");
    for (order, region, amount) in [(1, "us", 40), (2, "us", 250), (3, "us", 120), (4, "eu", 90)] {
        let outcome = charge::call_on(&app, order, region.to_string(), amount)
            .await?
            .result()
            .await;
        match outcome {
            Ok(charged) => println!("order {order} ({region}): charged {charged}"),
            Err(e) => println!("order {order} ({region}): {e}"),
        }
    }
    app.emit_event("user.signed_up", json!({"email": "ana@example.com"}))
        .await?;

    // the reactions were routed as their sources ran; give them a moment
    tokio::time::sleep(Duration::from_millis(300)).await;
    runner.stop().await?;
    for t in app.triggers().await? {
        println!("trigger '{}': {}", t.name, t.condition);
    }
    Ok(())
}
