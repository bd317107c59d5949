//! The `#[task]` attribute macro of pynenc.
//!
//! Use it through the `pynenc` crate as `#[pynenc::task]`: the generated
//! code refers to the runtime by absolute paths (`::pynenc::task::...`), so
//! the crate using the macro must depend on `pynenc` under that name.
//!
//! # Declaring a task
//!
//! ```ignore
//! /// Adds two numbers.
//! #[pynenc::task(max_retries = 2, retry_for = ["Timeout", "IoError"])]
//! async fn add(x: i64, y: i64) -> i64 {
//!     x + y
//! }
//!
//! #[pynenc::task]
//! fn total(n: i64) -> Result<i64, pynenc::TaskError> {
//!     Ok((1..=n).sum())
//! }
//! ```
//!
//! Both `async fn` and plain `fn` are accepted: an async task runs on the
//! runtime, a plain one on a blocking thread.
//!
//! The function itself is left unchanged: it stays callable as a plain
//! function (`add(1, 2).await`, handy in unit tests). Next to it the macro
//! generates a module with the same name and the same visibility, holding
//! the pynenc API of the task (functions and modules live in different
//! namespaces, so `add(1, 2)` is the function and `add::call(1, 2)` the task).
//!
//! # Options
//!
//! All options are optional; unset options take the value of
//! `pynenc::task::TaskOptionsSpec::DEFAULT`. An unknown option, an option
//! given twice or a value of the wrong type is a compile error naming the task
//! and the option. The names, kinds and rules come from the `pynenc-options`
//! crate, which the configuration and the runtime checks read too, so an
//! option means the same in `#[task(...)]`, in `pynenc.toml` and in
//! `PYNENC__TASK__…` variables.
//!
//! | option | value | meaning |
//! |---|---|---|
//! | `max_retries` | `u32` literal | how many times a retriable error is retried |
//! | `retry_for` | array of string literals | error kinds that are retried (the retry error always is) |
//! | `running_concurrency` | `Disabled`, `Task`, `Arguments` or `Keys` | concurrency control when picking invocations to run |
//! | `registration_concurrency` | same | concurrency control when routing new calls |
//! | `key_arguments` | array of string literals | the parameters identifying an invocation for `Keys` concurrency |
//! | `on_diff_non_key_args_raise` | `bool` | raise instead of reusing an invocation whose non-key arguments differ |
//! | `registration_scope` | `Queued`, `Active` or `Cached` | which invocation registration concurrency reuses (default `Queued`) |
//! | `registration_cache_seconds` | `u32` literal | how long a success is reused with `Cached` (default 300) |
//! | `reroute_on_concurrency_control` | `bool` | re-route instead of ending `CONCURRENCY_CONTROLLED_FINAL` |
//! | `parallel_batch_size` | `usize` literal, at least 1 | how many calls `parallelize` routes per batch |
//! | `inline_arguments` | array of string literals | parameters whose values stay in the record whatever their size (never in the data store) |
//! | `data_store_min_size_bytes` | `u32` literal | arguments and results longer than this go to the data store (default 0: the app's `data_store.min_size_bytes`) |
//! | `workflow` | `bool` | a durable workflow: its calls are steps, recorded once and given back when it runs again |
//!
//! Concurrency controls are written as a bare identifier (`Task`), a path
//! ending in one (`ConcurrencyControl::Task`) or a string literal (`"task"`),
//! in any case. Every name of `key_arguments` must be a parameter of the
//! function, and `Keys` concurrency needs at least one key argument:
//!
//! ```ignore
//! #[pynenc::task(registration_concurrency = Keys, key_arguments = ["user_id"])]
//! async fn sync_user(user_id: u64, full: bool) { /* ... */ }
//! ```
//!
//! Registration concurrency reuses, for a new call with the same key, an
//! invocation still queued (`registration_scope = Queued`, as in Pynenc);
//! with `Active` it also joins one that is pending, running or paused, and
//! with `Cached` it also returns a success younger than
//! `registration_cache_seconds`. The scope is written like a concurrency
//! control (`Active`, `RegistrationScopeName::Active`, `"active"`); a scope
//! other than `Queued` without registration concurrency is a compile error
//! (it would do nothing), and so is `Cached` with a cache time of 0:
//!
//! ```ignore
//! #[pynenc::task(
//!     registration_concurrency = Arguments,
//!     registration_scope = Cached,
//!     registration_cache_seconds = 60,
//! )]
//! async fn exchange_rate(currency: String) -> f64 { /* ... */ }
//! ```
//!
//! # Generated API
//!
//! For `async fn add(x: i64, y: i64) -> i64` the macro generates `mod add`
//! containing:
//!
//! - `DEFINITION: pynenc::task::TaskDefinition`: the task id (the module path
//!   of `mod add`, e.g. `my_crate::jobs::add`), the parameter names, the
//!   options and the body. It is submitted to the process-wide registry, so
//!   every task compiled into the binary is known. (What only generated code
//!   uses is reached through `pynenc::__private`, which is not part of the API.)
//! - `Params`: the named arguments (`pub struct Params { pub x: i64, pub y: i64 }`).
//! - `pynenc::task::IntoArguments<Params>` implemented for `Params` and for
//!   the tuple of the parameters (`(i64, i64)`); a one-parameter task also
//!   accepts the bare value and the 1-tuple (`5` and `(5,)`), a task without
//!   parameters accepts `()`. `pynenc::Arguments` is accepted by every task.
//! - `task() -> pynenc::task::Task<Params, i64>`: a typed handle.
//! - `args(x, y) -> pynenc::Result<pynenc::Arguments>`: the serialized arguments.
//! - `async call(x, y) -> pynenc::Result<pynenc::Invocation<i64>>` and
//!   `async call_on(app, x, y)`: call the task (on the current app or on a
//!   given one); await `.result()` on the invocation for the value.
//! - `async direct(x, y) -> pynenc::Result<i64>`: call and wait for the value.
//! - `async parallelize(items)` and `async parallelize_on(app, items)`: one
//!   call per item (tuples, `Params` or `Arguments`), routed in batches of
//!   `parallel_batch_size`; they return a `pynenc::InvocationGroup<i64>`.
//!
//! The result type `R` is the function's return type; for a function without
//! a return type it is `()`. A function returning a type whose last path
//! segment is `Result` (`Result<T, E>`, `std::result::Result<T, E>`,
//! `anyhow::Result<T>`, `pynenc::Result<T>`, `io::Result<T>`, ...) is
//! *fallible*: `R` is its first generic argument `T`, and an `Err(e)` becomes
//! the task's error (`E` must implement `Display + 'static`).
//!
//! # Restrictions
//!
//! - Tasks must be module-level items: not methods or associated functions
//!   (no `self`), and not functions declared inside a function body (the
//!   generated module reaches the function as `super::name`).
//! - No generics, lifetimes, `impl Trait` or `where` clauses: a task is called
//!   by name with serialized arguments.
//! - No `unsafe fn` and no variadic functions.
//! - Parameters are simple identifiers (`x: i64`, `mut x: i64`); patterns
//!   such as `(a, b): (i32, i32)` or `_` are rejected.
//! - Parameter types are owned: no references (use `String`, not `&str`).
//!   They must implement `serde::Serialize + serde::de::DeserializeOwned +
//!   Send + 'static`; the return type (or the `Ok` type of a fallible task)
//!   must implement `Serialize + DeserializeOwned + Send + 'static`. An async
//!   task's future must be `Send`.
//! - Parameter types are written verbatim inside the generated module, which
//!   starts with `use super::*;`: every name visible in the parent module is
//!   visible there, except a parent type named `Params`, which the generated
//!   `Params` struct shadows (refer to it by a path such as `crate::x::Params`).
//! - The crate using the macro must have `pynenc` available as `::pynenc`.
#![deny(missing_docs)]

mod errors;
mod function;
pub(crate) mod generate;
mod options;
#[cfg(test)]
mod tests;

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::{quote, ToTokens};
use syn::ItemFn;

use function::TaskFn;

/// Turns a module-level function into a pynenc task.
///
/// The function is kept unchanged; a module of the same name and visibility
/// is generated next to it with the task's definition (registered in the
/// process-wide registry) and its typed API: `task()`, `args`, `call`,
/// `call_on`, `direct`, `parallelize`, `parallelize_on`, the `Params` struct
/// and `IntoArguments` implementations.
///
/// ```ignore
/// #[pynenc::task(max_retries = 2, retry_for = ["Timeout"])]
/// async fn add(x: i64, y: i64) -> i64 {
///     x + y
/// }
///
/// // elsewhere, with an app running:
/// let invocation = add::call(1, 2).await?;
/// let three: i64 = invocation.result().await?;
/// ```
///
/// Options: `max_retries`, `retry_for`, `running_concurrency`,
/// `registration_concurrency`, `key_arguments`, `on_diff_non_key_args_raise`,
/// `registration_scope`, `registration_cache_seconds`,
/// `reroute_on_concurrency_control`, `parallel_batch_size`,
/// `inline_arguments`, `data_store_min_size_bytes` and `workflow` (or
/// [`macro@workflow`]); see the crate
/// documentation for their values, the generated API and the restrictions on
/// the function.
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand_task(attr.into(), item.into()).into()
}

/// A durable workflow: `#[pynenc::workflow(options)]` is
/// `#[pynenc::task(workflow = true, options)]`. The calls the function
/// makes are steps, recorded once and given back when it runs again; in
/// its body `pynenc::workflow::{sleep, now, random, uuid, set_data,
/// get_data, wait_signal}` do what only a workflow can.
///
/// ```ignore
/// #[pynenc::workflow(max_retries = 3)]
/// async fn onboard(user: String) -> Result<(), pynenc::TaskError> {
///     create_account::call(user.clone()).await?.result().await?;
///     pynenc::workflow::sleep(std::time::Duration::from_secs(24 * 3600)).await?;
///     send_tips::call(user).await?.result().await?;
///     Ok(())
/// }
/// ```
#[proc_macro_attribute]
pub fn workflow(attr: TokenStream, item: TokenStream) -> TokenStream {
    let attr = TokenStream2::from(attr);
    let attr = if attr.is_empty() {
        quote!(workflow = true)
    } else {
        quote!(workflow = true, #attr)
    };
    expand_task(attr, item.into()).into()
}

/// Expands `#[task(attr)] item`; on error, the errors followed by the
/// unchanged item (so the function itself still exists).
fn expand_task(attr: TokenStream2, item: TokenStream2) -> TokenStream2 {
    match expand(attr, item.clone()) {
        Ok(tokens) => tokens,
        Err(err) => {
            let errors = err.to_compile_error();
            quote! { #errors #item }
        }
    }
}

/// Expands `#[task(attr)] item` or reports what is wrong with it.
fn expand(attr: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
    let function = parse_function(item)?;
    let task = TaskFn::from_item(&function)?;
    let param_names: Vec<String> = task.params.iter().map(|p| p.name.clone()).collect();
    let options = options::parse_options(&task.name, &param_names, attr)?;
    Ok(generate::generate(&function, &task, &options))
}

/// Parses the annotated item, which must be a function.
fn parse_function(item: TokenStream2) -> syn::Result<ItemFn> {
    match syn::parse2::<syn::Item>(item)? {
        syn::Item::Fn(function) => Ok(function),
        other => Err(syn::Error::new_spanned(
            item_head(&other),
            "`#[pynenc::task]` applies to functions only",
        )),
    }
}

/// The tokens to point at for an item that is not a function.
fn item_head(item: &syn::Item) -> TokenStream2 {
    match item {
        syn::Item::Struct(s) => s.ident.to_token_stream(),
        syn::Item::Enum(e) => e.ident.to_token_stream(),
        syn::Item::Mod(m) => m.ident.to_token_stream(),
        syn::Item::Impl(i) => i.impl_token.to_token_stream(),
        other => other.to_token_stream(),
    }
}
