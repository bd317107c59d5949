//! Expansion of `#[pynenc::task]`: definitions, options and arguments.

use pynenc::__private::TaskBody;
use pynenc::task::{ConcurrencyControl, IntoArguments, TaskOptionsSpec};
use pynenc::{Arguments, Serializer};
use serde::{Deserialize, Serialize};

/// Adds two numbers.
#[pynenc::task(max_retries = 2, retry_for = ["Timeout", "IoError"])]
async fn add(x: i64, y: i64) -> i64 {
    x + y
}

#[pynenc::task(
    running_concurrency = Keys,
    registration_concurrency = "arguments",
    key_arguments = ["n"],
    on_diff_non_key_args_raise = true,
    reroute_on_concurrency_control = false,
    parallel_batch_size = 7,
)]
fn total(n: i64) -> Result<i64, pynenc::TaskError> {
    if n < 0 {
        return Err(pynenc::TaskError::new("ValueError", "negative"));
    }
    Ok((1..=n).sum())
}

#[pynenc::task]
async fn ping() {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Point {
    x: i64,
    y: i64,
}

#[pynenc::task]
fn shift(p: Point, by: Option<i64>, r#type: String) -> pynenc::Result<Point> {
    let _ = r#type;
    let by = by.unwrap_or(1);
    Ok(Point {
        x: p.x + by,
        y: p.y + by,
    })
}

mod nested {
    #[pynenc::task(running_concurrency = ConcurrencyControl::Task)]
    pub async fn named(label: String) -> Vec<String> {
        vec![label]
    }
}

fn values(args: &Arguments) -> Vec<(String, String)> {
    args.serialized()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn definitions_have_module_path_ids_and_params() {
    assert_eq!(add::DEFINITION.task_id, "macro_expansion::add");
    assert_eq!(add::DEFINITION.params, &["x", "y"]);
    assert!(matches!(add::DEFINITION.body, TaskBody::Async(_)));
    assert_eq!(total::DEFINITION.task_id, "macro_expansion::total");
    assert!(matches!(total::DEFINITION.body, TaskBody::Sync(_)));
    assert_eq!(ping::DEFINITION.params, &[] as &[&str]);
    assert_eq!(shift::DEFINITION.params, &["p", "by", "type"]);
    assert_eq!(
        nested::named::DEFINITION.task_id,
        "macro_expansion::nested::named"
    );
    assert_eq!(add::task().task_id(), "macro_expansion::add");
}

#[test]
fn options_are_taken_from_the_attribute() {
    let o = add::DEFINITION.options;
    assert_eq!(o.max_retries, 2);
    assert_eq!(o.retry_for, &["Timeout", "IoError"]);
    assert_eq!(o.running_concurrency, ConcurrencyControl::Disabled);
    assert_eq!(
        o.parallel_batch_size,
        TaskOptionsSpec::DEFAULT.parallel_batch_size
    );

    let o = total::DEFINITION.options;
    assert_eq!(o.max_retries, 0);
    assert_eq!(o.running_concurrency, ConcurrencyControl::Keys);
    assert_eq!(o.registration_concurrency, ConcurrencyControl::Arguments);
    assert_eq!(o.key_arguments, &["n"]);
    assert!(o.on_diff_non_key_args_raise);
    assert!(!o.reroute_on_concurrency_control);
    assert_eq!(o.parallel_batch_size, 7);

    let o = ping::DEFINITION.options;
    let d = TaskOptionsSpec::DEFAULT;
    assert_eq!(o.max_retries, d.max_retries);
    assert_eq!(o.retry_for, d.retry_for);
    assert_eq!(
        o.reroute_on_concurrency_control,
        d.reroute_on_concurrency_control
    );

    assert_eq!(
        nested::named::DEFINITION.options.running_concurrency,
        ConcurrencyControl::Task
    );
}

#[test]
fn definitions_are_registered() {
    let ids: Vec<&str> = pynenc::task::registered_tasks()
        .map(|d| d.task_id)
        .collect();
    for id in [
        "macro_expansion::add",
        "macro_expansion::total",
        "macro_expansion::ping",
        "macro_expansion::shift",
        "macro_expansion::nested::named",
    ] {
        assert!(ids.contains(&id), "{id} not in {ids:?}");
    }
}

#[test]
fn tuples_and_params_into_arguments() {
    let expected = pairs(&[("x", "1"), ("y", "2")]);
    let a = (1i64, 2i64).into_arguments(Serializer::Json).unwrap();
    assert_eq!(values(&a), expected);
    let a = add::Params { x: 1, y: 2 }
        .into_arguments(Serializer::Json)
        .unwrap();
    assert_eq!(values(&a), expected);
    let a = IntoArguments::<add::Params>::into_arguments(a, Serializer::Json).unwrap();
    assert_eq!(values(&a), expected);
}

#[test]
fn one_parameter_accepts_bare_value_and_one_tuple() {
    let expected = pairs(&[("n", "5")]);
    let bare = IntoArguments::<total::Params>::into_arguments(5i64, Serializer::Json).unwrap();
    assert_eq!(values(&bare), expected);
    let tuple = IntoArguments::<total::Params>::into_arguments((5i64,), Serializer::Json).unwrap();
    assert_eq!(values(&tuple), expected);
    let named = nested::named::Params { label: "a".into() }
        .into_arguments(Serializer::Json)
        .unwrap();
    assert_eq!(values(&named), pairs(&[("label", "\"a\"")]));
}

#[test]
fn zero_parameters_accept_unit() {
    let a = IntoArguments::<ping::Params>::into_arguments((), Serializer::Json).unwrap();
    assert!(a.is_empty());
    let a = ping::Params {}.into_arguments(Serializer::Json).unwrap();
    assert!(a.is_empty());
}

#[test]
fn structured_and_raw_named_arguments() {
    let a = (Point { x: 1, y: 2 }, Some(3i64), "t".to_string())
        .into_arguments(Serializer::Json)
        .unwrap();
    assert_eq!(
        values(&a),
        pairs(&[("by", "3"), ("p", r#"{"x":1,"y":2}"#), ("type", "\"t\"")])
    );
    // MessagePack serializes too.
    let a = (Point { x: 1, y: 2 }, None::<i64>, String::new())
        .into_arguments(Serializer::MessagePack)
        .unwrap();
    assert_eq!(a.len(), 3);
}

#[tokio::test]
async fn functions_stay_callable() {
    assert_eq!(add(1, 2).await, 3);
    assert_eq!(total(4).unwrap(), 10);
    assert!(total(-1).is_err());
    ping().await;
    assert_eq!(
        shift(Point { x: 0, y: 0 }, None, String::new()).unwrap(),
        Point { x: 1, y: 1 }
    );
    assert_eq!(nested::named("a".into()).await, vec!["a".to_string()]);
}

/// The typed API compiles with the argument forms users write.
#[allow(dead_code)]
async fn api_type_checks(app: &pynenc::Pynenc) -> pynenc::Result<()> {
    let invocation: pynenc::Invocation<i64> = add::call(1, 2).await?;
    let _: i64 = invocation.result().await?;
    let _: i64 = total::direct(3).await?;
    let _ = total::task().call(5).await?;
    let _ = total::task().call((5,)).await?;
    let _ = add::task().call((1, 2)).await?;
    let _ = add::call_on(app, 1, 2).await?;
    let _: pynenc::InvocationGroup<i64> = add::parallelize([(1, 2), (3, 4)]).await?;
    let _ = total::parallelize(vec![1, 2, 3]).await?;
    let _ = add::parallelize_on(app, vec![add::Params { x: 1, y: 2 }]).await?;
    let _ = add::parallelize(vec![add::args(1, 2)?]).await?;
    let _: () = ping::direct().await?;
    let _ = ping::parallelize(vec![(), ()]).await?;
    let _: Point = shift::direct(Point { x: 1, y: 1 }, None, "t".into()).await?;
    let _: Vec<String> = nested::named::direct("x".into()).await?;
    let _ = nested::named::task().call("x".to_string()).await?;
    Ok(())
}

#[test]
fn generated_names_do_not_clash_with_parameters() {
    // Parameters named like the generated API's own variables.
    let a = IntoArguments::<clash::Params>::into_arguments(
        ("a".to_string(), 1u8, 2u8, 3u8),
        Serializer::Json,
    )
    .unwrap();
    assert_eq!(
        values(&a),
        pairs(&[
            ("app", "\"a\""),
            ("input", "1"),
            ("serializer", "3"),
            ("task", "2")
        ])
    );
    assert_eq!(
        clash::DEFINITION.params,
        &["app", "input", "task", "serializer"]
    );
}

#[pynenc::task]
fn clash(app: String, input: u8, task: u8, serializer: u8) -> u32 {
    app.len() as u32 + u32::from(input) + u32::from(task) + u32::from(serializer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_api_runs_through_an_app() -> pynenc::Result<()> {
    let app = pynenc::Pynenc::builder()
        .app_id("macro_expansion")
        .build()?;
    let runner = app.runner().spawn();

    let invocation = add::call_on(&app, 1, 2).await?;
    assert_eq!(invocation.task_id(), "macro_expansion::add");
    assert_eq!(invocation.result().await?, 3);

    assert_eq!(total::task().call_on(&app, 4).await?.result().await?, 10);
    let failed = total::call_on(&app, -1).await?.result().await;
    assert!(failed.is_err(), "{failed:?}");

    let group = add::parallelize_on(&app, [(1, 1), (2, 2), (3, 3)]).await?;
    assert_eq!(group.results().await?, vec![2, 4, 6]);

    ping::call_on(&app).await?.result().await?;
    let moved = shift::call_on(&app, Point { x: 1, y: 1 }, Some(2), "t".into()).await?;
    assert_eq!(moved.result().await?, Point { x: 3, y: 3 });
    assert_eq!(
        nested::named::call_on(&app, "n".into())
            .await?
            .result()
            .await?,
        vec!["n".to_string()]
    );

    runner.stop().await?;
    Ok(())
}
