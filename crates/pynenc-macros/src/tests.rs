//! The macro's own parsing, checks and expansion, without a compiler run
//! (the compile errors themselves are checked by `tests/compile_fail.rs`).

use proc_macro2::TokenStream as TokenStream2;
use pynenc_options::{ConcurrencyControl, RegistrationScopeName};
use quote::{quote, ToTokens};
use syn::ReturnType;

use crate::function::{output_kind, Output, TaskFn};
use crate::generate::spec::options_tokens;
use crate::options::{parse_options, TaskOptions, Value};
use crate::{expand, expand_task};

fn params(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn options(attr: TokenStream2) -> TaskOptions {
    parse_options("add", &params(&["x", "y"]), attr).unwrap_or_else(|e| panic!("{e}"))
}

fn option_error(attr: TokenStream2) -> String {
    match parse_options("add", &params(&["x", "y"]), attr) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e
            .into_iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

fn task_fn(item: TokenStream2) -> syn::Result<TaskFn> {
    TaskFn::from_item(&syn::parse2(item).unwrap())
}

fn task_error(item: TokenStream2) -> String {
    match task_fn(item) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e
            .into_iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

fn output(ty: TokenStream2) -> syn::Result<Output> {
    let ret: ReturnType = syn::parse2(quote!(-> #ty)).unwrap();
    output_kind("t", &ret)
}

fn tokens_text(t: &TokenStream2) -> String {
    t.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn compact(t: impl ToTokens) -> String {
    t.to_token_stream().to_string().replace(' ', "")
}

// -- options ----------------------------------------------------------

#[test]
fn no_options_keep_defaults() {
    let o = options(quote!());
    assert!(o.get("max_retries").is_none());
    assert!(o.get("retry_for").is_none());
    assert!(o.get("running_concurrency").is_none());
    assert!(o.get("parallel_batch_size").is_none());
    assert_eq!(
        compact(options_tokens(&o)),
        "::pynenc::task::TaskOptionsSpec::DEFAULT"
    );
}

#[test]
fn every_option_is_parsed() {
    let o = options(quote!(
        max_retries = 2,
        retry_for = ["Timeout", "IoError"],
        running_concurrency = Task,
        registration_concurrency = "keys",
        key_arguments = ["y"],
        on_diff_non_key_args_raise = true,
        registration_scope = active,
        registration_cache_seconds = 60,
        reroute_on_concurrency_control = false,
        parallel_batch_size = 10,
        inline_arguments = ["x"],
        data_store_min_size_bytes = 4096,
        workflow = true,
    ));
    // every option of the vocabulary was written
    for def in pynenc_options::OPTIONS {
        assert!(o.get(def.name).is_some(), "{} not parsed", def.name);
    }
    assert_eq!(o.get("max_retries"), Some(&Value::Count(2)));
    assert_eq!(o.get("workflow"), Some(&Value::Flag(true)));
    assert_eq!(
        o.get("inline_arguments"),
        Some(&Value::List(vec!["x".into()]))
    );
    assert_eq!(
        o.get("data_store_min_size_bytes"),
        Some(&Value::Count(4096))
    );
    assert_eq!(
        o.get("retry_for"),
        Some(&Value::List(vec!["Timeout".into(), "IoError".into()]))
    );
    assert_eq!(
        o.get("running_concurrency"),
        Some(&Value::Concurrency(ConcurrencyControl::Task))
    );
    assert_eq!(
        o.get("registration_concurrency"),
        Some(&Value::Concurrency(ConcurrencyControl::Keys))
    );
    assert_eq!(o.get("key_arguments"), Some(&Value::List(vec!["y".into()])));
    assert_eq!(
        o.get("on_diff_non_key_args_raise"),
        Some(&Value::Flag(true))
    );
    assert_eq!(
        o.get("reroute_on_concurrency_control"),
        Some(&Value::Flag(false))
    );
    assert_eq!(
        o.get("registration_scope"),
        Some(&Value::Scope(RegistrationScopeName::Active))
    );
    assert_eq!(
        o.get("registration_cache_seconds"),
        Some(&Value::Seconds(60))
    );
    assert_eq!(o.get("parallel_batch_size"), Some(&Value::BatchSize(10)));
    let spec = compact(options_tokens(&o));
    for part in [
        "max_retries:2,",
        "retry_for:&[\"Timeout\",\"IoError\"],",
        "running_concurrency:::pynenc::task::ConcurrencyControl::Task,",
        "registration_concurrency:::pynenc::task::ConcurrencyControl::Keys,",
        "key_arguments:&[\"y\"],",
        "on_diff_non_key_args_raise:true,",
        "registration_scope:::pynenc::model::options::RegistrationScopeName::Active,",
        "registration_cache_seconds:60,",
        "reroute_on_concurrency_control:false,",
        "parallel_batch_size:10,",
        "..::pynenc::task::TaskOptionsSpec::DEFAULT}",
    ] {
        assert!(spec.contains(part), "{part} not in {spec}");
    }
}

#[test]
fn concurrency_forms() {
    for (value, expected) in [
        (quote!(Disabled), ConcurrencyControl::Disabled),
        (quote!(task), ConcurrencyControl::Task),
        (quote!(ARGUMENTS), ConcurrencyControl::Arguments),
        (
            quote!(ConcurrencyControl::Arguments),
            ConcurrencyControl::Arguments,
        ),
        (quote!("Task"), ConcurrencyControl::Task),
        (quote!("disabled"), ConcurrencyControl::Disabled),
    ] {
        let o = options(quote!(running_concurrency = #value));
        assert_eq!(
            o.get("running_concurrency"),
            Some(&Value::Concurrency(expected)),
            "{value}"
        );
    }
    let err = option_error(quote!(running_concurrency = Sometimes));
    assert_eq!(
        err,
        "task `add`: option `running_concurrency`: unknown concurrency control \
         `Sometimes` (expected `Disabled`, `Task`, `Arguments` or `Keys`)"
    );
    let err = option_error(quote!(registration_concurrency = 1));
    assert!(
        err.contains("option `registration_concurrency`: expected `Disabled`"),
        "{err}"
    );
}

#[test]
fn registration_scope_forms() {
    for (value, expected) in [
        (quote!(Queued), RegistrationScopeName::Queued),
        (quote!(registered), RegistrationScopeName::Queued),
        (quote!(ACTIVE), RegistrationScopeName::Active),
        (
            quote!(RegistrationScopeName::Cached),
            RegistrationScopeName::Cached,
        ),
        (quote!("active"), RegistrationScopeName::Active),
    ] {
        let o = options(quote!(registration_concurrency = Task, registration_scope = #value));
        assert_eq!(
            o.get("registration_scope"),
            Some(&Value::Scope(expected)),
            "{value}"
        );
    }
    let err = option_error(quote!(
        registration_concurrency = Task,
        registration_scope = Running
    ));
    assert_eq!(
        err,
        "task `add`: option `registration_scope`: unknown registration scope \
         `Running` (expected `Queued`, `Active` or `Cached`)"
    );
    let err = option_error(quote!(registration_scope = 1));
    assert_eq!(
        err,
        "task `add`: option `registration_scope`: expected `Queued`, `Active` or `Cached`"
    );
    let o = options(quote!(registration_cache_seconds = 30u32));
    assert_eq!(
        o.get("registration_cache_seconds"),
        Some(&Value::Seconds(30))
    );
    for value in [quote!("30"), quote!(1.5), quote!(30u64), quote!(-1)] {
        let err = option_error(quote!(registration_cache_seconds = #value));
        assert_eq!(
            err,
            "task `add`: option `registration_cache_seconds`: expected a whole number of \
             seconds as a `u32` integer literal, e.g. `registration_cache_seconds = 300`",
            "{value}"
        );
    }
    let err = option_error(quote!(registration_cache_seconds = 99999999999));
    assert_eq!(
        err,
        "task `add`: option `registration_cache_seconds`: the value does not fit in a `u32`"
    );
}

#[test]
fn registration_scope_needs_registration_concurrency() {
    for scope in [quote!(Active), quote!(Cached)] {
        let err = option_error(quote!(registration_scope = #scope));
        assert!(
            err.starts_with("task `add`: option `registration_scope`: scope `"),
            "{err}"
        );
        assert!(
            err.ends_with(
                "does nothing without registration concurrency: \
                 set `registration_concurrency` to task, arguments or keys"
            ),
            "{err}"
        );
        let err = option_error(quote!(
            registration_concurrency = Disabled,
            registration_scope = #scope
        ));
        assert!(err.contains("`registration_scope`"), "{err}");
    }
    // the default scope, written or not, needs nothing
    options(quote!(registration_scope = Queued));
    options(quote!(
        registration_scope = Queued,
        registration_cache_seconds = 0
    ));
    options(quote!(registration_cache_seconds = 0));
    // running concurrency is not registration concurrency
    let err = option_error(quote!(
        running_concurrency = Task,
        registration_scope = Active
    ));
    assert!(err.contains("option `registration_scope`"), "{err}");
    // an invalid registration concurrency is reported once, not twice
    let err = option_error(quote!(
        registration_concurrency = Sometimes,
        registration_scope = Active
    ));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("unknown concurrency control `Sometimes`"),
        "{err}"
    );
}

#[test]
fn cached_scope_needs_a_cache_time() {
    let err = option_error(quote!(
        registration_concurrency = Arguments,
        registration_scope = Cached,
        registration_cache_seconds = 0,
    ));
    assert_eq!(
        err,
        "task `add`: option `registration_cache_seconds`: must be at least 1 with \
         `registration_scope = cached` (a success reused for 0 seconds is never reused)"
    );
    let o = options(quote!(
        registration_concurrency = Arguments,
        registration_scope = Cached,
    ));
    assert!(o.get("registration_cache_seconds").is_none());
    let spec = compact(options_tokens(&o));
    assert!(
        spec.contains(
            "registration_scope:::pynenc::model::options::RegistrationScopeName::Cached,"
        ),
        "{spec}"
    );
    // an invalid cache time is reported once, not twice
    let err = option_error(quote!(
        registration_concurrency = Arguments,
        registration_scope = Cached,
        registration_cache_seconds = "0",
    ));
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn suffixed_integers() {
    assert_eq!(
        options(quote!(max_retries = 3u32)).get("max_retries"),
        Some(&Value::Count(3))
    );
    assert_eq!(
        options(quote!(parallel_batch_size = 5usize)).get("parallel_batch_size"),
        Some(&Value::BatchSize(5))
    );
    let err = option_error(quote!(max_retries = 3i64));
    assert!(err.contains("expected a `u32` integer literal"), "{err}");
}

#[test]
fn key_arguments_must_be_parameters() {
    let err = option_error(quote!(key_arguments = ["z"]));
    assert_eq!(
        err,
        "task `add`: option `key_arguments`: `z` is not a parameter (parameters: x, y)"
    );
    let err = parse_options("ping", &[], quote!(key_arguments = ["x"]))
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        err,
        "task `ping`: option `key_arguments`: `x` is not a parameter (the task has no parameters)"
    );
    let err = option_error(quote!(key_arguments = ["x", "x"]));
    assert!(err.contains("`x` is listed more than once"), "{err}");
}

#[test]
fn keys_concurrency_needs_key_arguments() {
    let err = option_error(quote!(running_concurrency = Keys));
    assert_eq!(
        err,
        "task `add`: option `running_concurrency`: concurrency control `Keys` needs \
         `key_arguments = [...]` naming at least one parameter (parameters: x, y)"
    );
    let err = option_error(quote!(registration_concurrency = keys, key_arguments = []));
    assert!(
        err.starts_with(
            "task `add`: option `registration_concurrency`: concurrency control `Keys`"
        ),
        "{err}"
    );
    // An invalid key list is reported once, not twice.
    let err = option_error(quote!(running_concurrency = Keys, key_arguments = ["z"]));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("`z` is not a parameter"), "{err}");
    // Keys with keys is fine, in any order.
    let o = options(quote!(key_arguments = ["x"], running_concurrency = Keys));
    assert_eq!(
        o.get("running_concurrency"),
        Some(&Value::Concurrency(ConcurrencyControl::Keys))
    );
}

#[test]
fn wrong_values_name_task_and_option() {
    let cases = [
        (
            quote!(max_retries = "2"),
            "task `add`: option `max_retries`: expected a `u32` integer literal, e.g. `max_retries = 3`",
        ),
        (
            quote!(max_retries = 99999999999),
            "task `add`: option `max_retries`: the value does not fit in a `u32`",
        ),
        (
            quote!(retry_for = "Timeout"),
            "task `add`: option `retry_for`: expected an array of string literals, e.g. `[\"a\", \"b\"]`",
        ),
        (
            quote!(retry_for = ["Timeout", 3]),
            "task `add`: option `retry_for`: expected a string literal",
        ),
        (
            quote!(retry_for = [" "]),
            "task `add`: option `retry_for`: an error kind cannot be empty",
        ),
        (
            quote!(key_arguments = [x]),
            "task `add`: option `key_arguments`: expected a string literal",
        ),
        (
            quote!(on_diff_non_key_args_raise = 1),
            "task `add`: option `on_diff_non_key_args_raise`: expected `true` or `false`",
        ),
        (
            quote!(reroute_on_concurrency_control = "yes"),
            "task `add`: option `reroute_on_concurrency_control`: expected `true` or `false`",
        ),
        (
            quote!(parallel_batch_size = 0),
            "task `add`: option `parallel_batch_size`: must be at least 1",
        ),
        (
            quote!(parallel_batch_size = 1.5),
            "task `add`: option `parallel_batch_size`: expected a `usize` integer literal, e.g. `parallel_batch_size = 100`",
        ),
        (
            quote!(max_retries = 1, max_retries = 2),
            "task `add`: option `max_retries`: given more than once",
        ),
        (
            quote!(max_retries),
            "task `add`: option `max_retries` needs a value: write `max_retries = ...`",
        ),
        (
            quote!(max_retries = 1 retry_for = []),
            "task `add`: expected `,` between options",
        ),
    ];
    for (attr, expected) in cases {
        assert_eq!(option_error(attr.clone()), expected, "for `{attr}`");
    }
}

#[test]
fn unknown_option_lists_the_accepted_ones() {
    let err = option_error(quote!(retries = 3));
    assert!(
        err.starts_with(
            "task `add`: unknown option `retries` (accepted options: max_retries, retry_for,"
        ),
        "{err}"
    );
}

#[test]
fn several_errors_are_reported_together() {
    let err = option_error(quote!(bogus = 1, max_retries = -1, parallel_batch_size = 0));
    assert_eq!(err.lines().count(), 3, "{err}");
}

// -- return types ---------------------------------------------------------

#[test]
fn plain_and_unit_results() {
    assert!(matches!(
        output_kind("t", &ReturnType::Default),
        Ok(Output::Unit)
    ));
    assert!(matches!(output(quote!(())), Ok(Output::Unit)));
    match output(quote!(Vec<i64>)) {
        Ok(Output::Value(ty)) => assert_eq!(compact(ty), "Vec<i64>"),
        _ => panic!("expected a value"),
    }
    match output(quote!(ResultSet)) {
        Ok(Output::Value(ty)) => assert_eq!(compact(ty), "ResultSet"),
        _ => panic!("expected a value"),
    }
}

#[test]
fn fallible_results_yield_their_ok_type() {
    for (ty, ok) in [
        (quote!(Result<i64, TaskError>), "i64"),
        (
            quote!(std::result::Result<Vec<String>, MyError>),
            "Vec<String>",
        ),
        (quote!(::core::result::Result<(), E>), "()"),
        (quote!(anyhow::Result<u8>), "u8"),
        (quote!(pynenc::Result<Point>), "Point"),
        (quote!(io::Result<Option<i64>>), "Option<i64>"),
        (quote!((Result<i64, E>)), "i64"),
    ] {
        match output(ty.clone()) {
            Ok(Output::Fallible(t)) => assert_eq!(compact(t), ok, "for {ty}"),
            _ => panic!("{ty} should be fallible"),
        }
    }
    let err = output(quote!(fmt::Result)).err().unwrap().to_string();
    assert!(
        err.contains("cannot tell the value type of this `Result`"),
        "{err}"
    );
}

#[test]
fn unsupported_results() {
    let err = output(quote!(&'static str)).err().unwrap().to_string();
    assert!(
        err.starts_with("task `t`: return type: references are not supported"),
        "{err}"
    );
    let err = output(quote!(impl Serialize)).err().unwrap().to_string();
    assert!(err.contains("`impl Trait` is not supported"), "{err}");
    let err = output(quote!(!)).err().unwrap().to_string();
    assert!(err.contains("`!` is not supported"), "{err}");
    let err = output(quote!(Result<Vec<&str>, E>))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("references are not supported"), "{err}");
}

// -- signatures -----------------------------------------------------------

#[test]
fn accepted_signatures() {
    let t = task_fn(quote!(
        async fn add(x: i64, mut y: Vec<Option<String>>, r#type: u8) -> i64 {
            0
        }
    ))
    .unwrap();
    assert_eq!(t.name, "add");
    assert!(t.is_async);
    let names: Vec<&str> = t.params.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["x", "y", "type"]);
    assert_eq!(t.params[1].ident.to_string(), "y");
    assert_eq!(t.params[2].ident.to_string(), "r#type");
    assert!(matches!(t.output, Output::Value(_)));

    let t = task_fn(quote!(
        pub(crate) fn total() -> Result<i64, E> {
            Ok(0)
        }
    ))
    .unwrap();
    assert!(!t.is_async);
    assert!(t.params.is_empty());
    assert!(matches!(t.output, Output::Fallible(_)));

    let t = task_fn(quote!(
        fn r#match(x: Cow<'static, str>) {}
    ))
    .unwrap();
    assert_eq!(t.name, "match");
}

#[test]
fn rejected_signatures() {
    let cases = [
        (
            quote!(
                fn f(&self) {}
            ),
            "task `f`: a task cannot take `self`: tasks are module-level functions, not methods",
        ),
        (
            // rustc itself refuses this outside foreign functions, with errors
            // that vary by toolchain; the macro's own error is checked here
            quote!(
                fn f(x: i64, ...) {}
            ),
            "task `f`: a task cannot be variadic",
        ),
        (
            quote!(
                fn f<T>(x: T) {}
            ),
            "task `f`: a task cannot have generic parameters or lifetimes",
        ),
        (
            quote!(
                fn f<'a>(x: i64) {}
            ),
            "task `f`: a task cannot have generic parameters or lifetimes",
        ),
        (
            quote!(
                fn f(x: i64)
                where
                    i64: Copy,
                {
                }
            ),
            "task `f`: a task cannot have a `where` clause",
        ),
        (
            quote!(
                fn f((a, b): (i32, i32)) {}
            ),
            "task `f`: parameters must be simple identifiers like `x: i64`, not patterns",
        ),
        (
            quote!(
                fn f(ref x: i32) {}
            ),
            "task `f`: parameters must be simple identifiers",
        ),
        (
            quote!(
                fn f(_: i32) {}
            ),
            "task `f`: parameters need a name",
        ),
        (
            quote!(
                fn f(x: &str) {}
            ),
            "task `f`: parameter `x`: references are not supported",
        ),
        (
            quote!(
                fn f(x: Vec<&'static str>) {}
            ),
            "task `f`: parameter `x`: references are not supported",
        ),
        (
            quote!(
                fn f(x: Cow<'a, str>) {}
            ),
            "task `f`: parameter `x`: lifetimes other than `'static` are not supported",
        ),
        (
            quote!(
                fn f(x: impl Serialize) {}
            ),
            "task `f`: parameter `x`: `impl Trait` is not supported",
        ),
        (
            quote!(
                fn f(x: Box<dyn Fn()>) {}
            ),
            "task `f`: parameter `x`: trait objects are not supported",
        ),
        (
            quote!(
                unsafe fn f(x: i64) {}
            ),
            "task `f`: a task cannot be an `unsafe fn`",
        ),
    ];
    for (item, expected) in cases {
        let err = task_error(item.clone());
        assert!(err.starts_with(expected), "for `{item}`: {err}");
    }
}

#[test]
fn every_signature_problem_is_reported() {
    let err = task_error(quote!(
        fn f<T>(&self, x: &str, (a, b): (i32, i32)) -> &str {}
    ));
    assert_eq!(err.lines().count(), 5, "{err}");
}

// -- expansion ------------------------------------------------------------

#[test]
fn expands_async_task() {
    let out = expand(
        quote!(max_retries = 2),
        quote!(
            /// Adds.
            pub async fn add(x: i64, y: i64) -> i64 {
                x + y
            }
        ),
    )
    .unwrap();
    let text = tokens_text(&out);
    let compact = compact(&out);
    // The function is kept unchanged, followed by its module.
    assert!(
        text.starts_with(
            "# [doc = r\" Adds.\"] pub async fn add (x : i64 , y : i64) -> i64 { x + y }"
        ),
        "{text}"
    );
    assert!(text.contains("pub mod add {"), "{text}");
    for part in [
        "usesuper::*;",
        "task_id:::core::module_path!()",
        "params:&[\"x\",\"y\"]",
        "max_retries:2,..::pynenc::task::TaskOptionsSpec::DEFAULT",
        "body:::pynenc::__private::TaskBody::Async(__pynenc_run)",
        "::pynenc::__private::inventory::submit!{::pynenc::__private::TaskRegistration(&DEFINITION)}",
        "pubstructParams{",
        "pubx:i64,",
        "impl::pynenc::task::IntoArguments<Params>forParams",
        "impl::pynenc::task::IntoArguments<Params>for(i64,i64,)",
        "Params{x:self.0,y:self.1,}",
        "letx:i64=__pynenc_input.arg::<i64>(\"x\")?;",
        "let__pynenc_value=super::add(x,y).await;",
        "__pynenc_input.output::<i64>(&__pynenc_value)",
        "pubfntask()->::pynenc::task::Task<Params,i64>",
        "pubfnargs(x:i64,y:i64)->::pynenc::Result<::pynenc::Arguments>",
        "pubasyncfncall(x:i64,y:i64)->::pynenc::Result<::pynenc::Invocation<i64>>",
        "pubasyncfncall_on(app:&::pynenc::Pynenc,x:i64,y:i64)",
        "pubasyncfndirect(x:i64,y:i64)->::pynenc::Result<i64>",
        "pubasyncfnparallelize<A,I>(items:I,)->::pynenc::Result<::pynenc::InvocationGroup<i64>>",
        "pubasyncfnparallelize_on<A,I>(app:&::pynenc::Pynenc,items:I,)",
        "self::task().call(Params{x,y}).await",
    ] {
        assert!(compact.contains(part), "{part} not in {text}");
    }
    // The function's docs follow the module's heading.
    assert!(
        text.contains("Task `add`: the pynenc API of [`add`](fn@add)"),
        "{text}"
    );
    assert!(
        text.contains("# [doc = \"\"] # [doc = r\" Adds.\"] # [allow ("),
        "{text}"
    );
}

#[test]
fn expands_sync_fallible_single_parameter_task() {
    let out = expand(
        quote!(),
        quote!(
            fn total(n: i64) -> Result<i64, TaskError> {
                Ok(n)
            }
        ),
    )
    .unwrap();
    let compact = compact(&out);
    for part in [
        "mod total {".replace(' ', ""),
        "body:::pynenc::__private::TaskBody::Sync(__pynenc_run_sync)".into(),
        "options:::pynenc::task::TaskOptionsSpec::DEFAULT,".into(),
        "fn__pynenc_run_sync(__pynenc_input:::pynenc::__private::TaskInput,)->::pynenc::__private::TaskOutput".into(),
        "let__pynenc_value=super::total(n);".into(),
        "__pynenc_input.output_result::<i64,_>(__pynenc_value)".into(),
        "impl::pynenc::task::IntoArguments<Params>for(i64,)".into(),
        "impl::pynenc::task::IntoArguments<Params>fori64".into(),
        "Params{n:self}".into(),
        "pubfntask()->::pynenc::task::Task<Params,i64>".into(),
    ] {
        assert!(compact.contains(&part), "{part} not in {compact}");
    }
    // Private function, private module.
    assert!(compact.contains(")]modtotal{"), "{compact}");
}

#[test]
fn expands_zero_parameter_unit_task() {
    let out = expand(
        quote!(),
        quote!(
            async fn ping() {}
        ),
    )
    .unwrap();
    let compact = compact(&out);
    for part in [
        "params:&[]",
        "pubstructParams{}",
        "impl::pynenc::task::IntoArguments<Params>for()",
        "_serializer:::pynenc::Serializer",
        "super::ping().await;__pynenc_input.output::<()>(&())",
        "pubfntask()->::pynenc::task::Task<Params,()>",
        "pubasyncfncall()->",
        "pubasyncfncall_on(app:&::pynenc::Pynenc,)",
    ] {
        assert!(compact.contains(part), "{part} not in {compact}");
    }
    assert!(!compact.contains("fori64"), "{compact}");
}

#[test]
fn generated_names_avoid_the_users() {
    // A parameter named `app`, a result mentioning `A` and `I`.
    let out = expand(
        quote!(),
        quote!(
            pub fn f(app: String, input: i64) -> Vec<(A, I)> {
                vec![]
            }
        ),
    )
    .unwrap();
    let compact = compact(&out);
    assert!(
        compact.contains("call_on(__pynenc_app:&::pynenc::Pynenc,app:String,input:i64)"),
        "{compact}"
    );
    assert!(
        compact.contains("parallelize<A_,I_>(items:I_,)"),
        "{compact}"
    );
    assert!(
        compact.contains("letinput:i64=__pynenc_input.arg::<i64>(\"input\")?;"),
        "{compact}"
    );
}

#[test]
fn raw_names_and_arguments_type_parameter() {
    let out = expand(
        quote!(),
        quote!(
            fn r#loop(r#type: Arguments) {}
        ),
    )
    .unwrap();
    let compact = compact(&out);
    assert!(compact.contains("modr#loop{"), "{compact}");
    assert!(compact.contains("params:&[\"type\"]"), "{compact}");
    assert!(
        compact.contains(
            "ArgValue::insert_into(&self.r#type,&mut__pynenc_arguments,serializer,\"type\",)"
        ),
        "{compact}"
    );
    // No bare-value impl, which would overlap `impl IntoArguments<P> for Arguments`.
    assert!(!compact.contains("forArguments{"), "{compact}");
    assert!(compact.contains("for(Arguments,)"), "{compact}");
}

#[test]
fn cfg_attributes_are_copied_to_the_module() {
    let out = expand(
        quote!(),
        quote!(
            #[cfg(test)]
            fn f() {}
        ),
    )
    .unwrap();
    let text = tokens_text(&out);
    let module = text.split("fn f () { }").nth(1).unwrap();
    assert!(module.trim_start().starts_with("# [cfg (test)]"), "{text}");
}

#[test]
fn errors_keep_the_function() {
    let out = expand_task(
        quote!(bogus = 1),
        quote!(
            fn f(x: i64) -> i64 {
                x
            }
        ),
    );
    let text = tokens_text(&out);
    assert!(text.contains("compile_error"), "{text}");
    assert!(text.contains("unknown option `bogus`"), "{text}");
    assert!(text.ends_with("fn f (x : i64) -> i64 { x }"), "{text}");
    assert!(!text.contains("mod f"), "{text}");
}

#[test]
fn only_functions() {
    let err = expand(
        quote!(),
        quote!(
            struct S;
        ),
    )
    .err()
    .unwrap()
    .to_string();
    assert_eq!(err, "`#[pynenc::task]` applies to functions only");
}
