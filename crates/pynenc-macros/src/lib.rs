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
//! and the option.
//!
//! | option | value | meaning |
//! |---|---|---|
//! | `max_retries` | `u32` literal | how many times a retriable error is retried |
//! | `retry_for` | array of string literals | error kinds that are retried (the retry error always is) |
//! | `running_concurrency` | `Disabled`, `Task`, `Arguments` or `Keys` | concurrency control when picking invocations to run |
//! | `registration_concurrency` | same | concurrency control when routing new calls |
//! | `key_arguments` | array of string literals | the parameters identifying an invocation for `Keys` concurrency |
//! | `on_diff_non_key_args_raise` | `bool` | raise instead of reusing an invocation whose non-key arguments differ |
//! | `reroute_on_concurrency_control` | `bool` | re-route instead of ending `CONCURRENCY_CONTROLLED_FINAL` |
//! | `parallel_batch_size` | `usize` literal, at least 1 | how many calls `parallelize` routes per batch |
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
//! # Generated API
//!
//! For `async fn add(x: i64, y: i64) -> i64` the macro generates `mod add`
//! containing:
//!
//! - `DEFINITION: pynenc::task::TaskDefinition`: the task id (the module path
//!   of `mod add`, e.g. `my_crate::jobs::add`), the parameter names, the
//!   options and the body. It is submitted to the process-wide registry
//!   (`pynenc::inventory`), so every task compiled into the binary is known.
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

use std::collections::HashSet;

use proc_macro::TokenStream;
use proc_macro2::{Literal, Span, TokenStream as TokenStream2, TokenTree};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::{
    Expr, FnArg, GenericArgument, Ident, ItemFn, Lit, Pat, PathArguments, ReturnType, Token, Type,
};

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
/// `reroute_on_concurrency_control` and `parallel_batch_size`; see the crate
/// documentation for their values, the generated API and the restrictions on
/// the function.
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand_task(attr.into(), item.into()).into()
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
    let options = parse_options(&task.name, &param_names, attr)?;
    Ok(generate(&function, &task, &options))
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

// ---------------------------------------------------------------------------
// The function
// ---------------------------------------------------------------------------

/// One parameter of a task function.
#[derive(Clone)]
struct Param {
    /// The identifier as written (possibly raw, without `mut`).
    ident: Ident,
    /// The parameter name (raw prefix removed): the argument's name.
    name: String,
    /// The parameter type.
    ty: Type,
}

/// What a task function returns.
#[derive(Clone)]
enum Output {
    /// Nothing: `()`.
    Unit,
    /// A value of this type.
    Value(Type),
    /// A `Result` whose `Ok` type is this one.
    Fallible(Type),
}

impl Output {
    /// The task's result type `R`.
    fn result_type(&self) -> TokenStream2 {
        match self {
            Output::Unit => quote!(()),
            Output::Value(ty) | Output::Fallible(ty) => ty.to_token_stream(),
        }
    }
}

/// A validated task function.
#[derive(Clone)]
struct TaskFn {
    /// The function name (raw prefix removed).
    name: String,
    /// Whether it is an `async fn`.
    is_async: bool,
    /// Its parameters, in order.
    params: Vec<Param>,
    /// What it returns.
    output: Output,
}

impl TaskFn {
    /// Checks the function's signature; reports every problem found.
    fn from_item(function: &ItemFn) -> syn::Result<TaskFn> {
        let sig = &function.sig;
        let name = sig.ident.unraw().to_string();
        let mut errors = Errors::default();
        let fail = |tokens: &dyn ToTokens, message: String| {
            syn::Error::new_spanned(tokens, format!("task `{name}`: {message}"))
        };

        if let Some(unsafety) = &sig.unsafety {
            errors.push(fail(unsafety, "a task cannot be an `unsafe fn`".into()));
        }
        if !sig.generics.params.is_empty() {
            errors.push(fail(
                &sig.generics,
                "a task cannot have generic parameters or lifetimes: it is called by name \
                 with serialized arguments, so every type must be concrete"
                    .into(),
            ));
        }
        if let Some(where_clause) = &sig.generics.where_clause {
            errors.push(fail(
                where_clause,
                "a task cannot have a `where` clause: every type must be concrete".into(),
            ));
        }
        if let Some(variadic) = &sig.variadic {
            errors.push(fail(variadic, "a task cannot be variadic".into()));
        }

        let mut params = Vec::new();
        for input in &sig.inputs {
            match input {
                FnArg::Receiver(receiver) => errors.push(fail(
                    receiver,
                    "a task cannot take `self`: tasks are module-level functions, \
                     not methods"
                        .into(),
                )),
                FnArg::Typed(typed) => {
                    let ident = match &*typed.pat {
                        Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => {
                            Some(pat.ident.clone())
                        }
                        Pat::Wild(_) => {
                            errors.push(fail(
                                &typed.pat,
                                "parameters need a name (it is the argument's name): \
                                 write `name: Type` instead of `_: Type`"
                                    .into(),
                            ));
                            None
                        }
                        other => {
                            errors.push(fail(
                                other,
                                "parameters must be simple identifiers like `x: i64`, \
                                 not patterns (arguments are passed by name)"
                                    .into(),
                            ));
                            None
                        }
                    };
                    if let Some((tokens, problem)) = unsupported_type(&typed.ty) {
                        let what = ident
                            .as_ref()
                            .map(|i| format!("parameter `{}`: ", i.unraw()))
                            .unwrap_or_default();
                        errors.push(fail(&tokens, format!("{what}{problem}")));
                    }
                    if let Some(ident) = ident {
                        params.push(Param {
                            name: ident.unraw().to_string(),
                            ident,
                            ty: (*typed.ty).clone(),
                        });
                    }
                }
            }
        }

        let output = match output_kind(&name, &sig.output) {
            Ok(output) => Some(output),
            Err(err) => {
                errors.push(err);
                None
            }
        };
        errors.finish()?;
        Ok(TaskFn {
            name,
            is_async: sig.asyncness.is_some(),
            params,
            // Set whenever there is no error.
            output: output.unwrap_or(Output::Unit),
        })
    }
}

/// Collects several errors and reports them together.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, err: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(err),
            None => self.0 = Some(err),
        }
    }

    fn finish(self) -> syn::Result<()> {
        match self.0 {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}

/// Removes parentheses and invisible groups around a type.
fn strip_type(ty: &Type) -> &Type {
    match ty {
        Type::Paren(p) => strip_type(&p.elem),
        Type::Group(g) => strip_type(&g.elem),
        other => other,
    }
}

/// The first part of a type that cannot be a task argument or result, with
/// the reason.
fn unsupported_type(ty: &Type) -> Option<(TokenStream2, &'static str)> {
    let found = |t: &dyn ToTokens, why| Some((t.to_token_stream(), why));
    match ty {
        Type::Reference(_) => found(
            ty,
            "references are not supported: arguments and results are serialized, so \
             types must be owned (use `String` instead of `&str`, `Vec<T>` instead of `&[T]`)",
        ),
        Type::ImplTrait(_) => found(
            ty,
            "`impl Trait` is not supported: a task cannot be generic, every type must be concrete",
        ),
        Type::TraitObject(_) => found(
            ty,
            "trait objects are not supported: types must be concrete and serializable",
        ),
        Type::Ptr(_) => found(
            ty,
            "raw pointers are not supported: types must be owned and serializable",
        ),
        Type::Infer(_) => found(ty, "the type must be written out, not `_`"),
        Type::BareFn(_) => found(
            ty,
            "function pointers are not supported: types must be serializable",
        ),
        Type::Paren(p) => unsupported_type(&p.elem),
        Type::Group(g) => unsupported_type(&g.elem),
        Type::Array(a) => unsupported_type(&a.elem),
        Type::Slice(s) => unsupported_type(&s.elem),
        Type::Tuple(t) => t.elems.iter().find_map(unsupported_type),
        Type::Path(p) => {
            if let Some(qself) = &p.qself {
                if let Some(found) = unsupported_type(&qself.ty) {
                    return Some(found);
                }
            }
            p.path
                .segments
                .iter()
                .find_map(|segment| match &segment.arguments {
                    PathArguments::AngleBracketed(args) => {
                        args.args.iter().find_map(|arg| {
                            match arg {
                    GenericArgument::Type(t) => unsupported_type(t),
                    GenericArgument::Lifetime(l) if l.ident != "static" => found(
                        l,
                        "lifetimes other than `'static` are not supported: types must be owned",
                    ),
                    _ => None,
                }
                        })
                    }
                    PathArguments::Parenthesized(args) => {
                        args.inputs.iter().find_map(unsupported_type)
                    }
                    PathArguments::None => None,
                })
        }
        _ => None,
    }
}

/// Classifies the return type of a task function.
fn output_kind(task: &str, output: &ReturnType) -> syn::Result<Output> {
    let ty = match output {
        ReturnType::Default => return Ok(Output::Unit),
        ReturnType::Type(_, ty) => strip_type(ty),
    };
    let fail = |t: &dyn ToTokens, message: &str| {
        syn::Error::new_spanned(t, format!("task `{task}`: {message}"))
    };
    if let Type::Never(_) = ty {
        return Err(fail(ty, "a task must return a value: `!` is not supported"));
    }
    if let Type::Tuple(tuple) = ty {
        if tuple.elems.is_empty() {
            return Ok(Output::Unit);
        }
    }
    if let Some((tokens, problem)) = unsupported_type(ty) {
        return Err(fail(&tokens, &format!("return type: {problem}")));
    }
    let Type::Path(path) = ty else {
        return Ok(Output::Value(ty.clone()));
    };
    if path.qself.is_some() {
        return Ok(Output::Value(ty.clone()));
    }
    let Some(last) = path.path.segments.last() else {
        return Ok(Output::Value(ty.clone()));
    };
    if last.ident != "Result" {
        return Ok(Output::Value(ty.clone()));
    }
    let ok_type = match &last.arguments {
        PathArguments::AngleBracketed(args) => args.args.iter().find_map(|arg| match arg {
            GenericArgument::Type(t) => Some(t.clone()),
            _ => None,
        }),
        _ => None,
    };
    match ok_type {
        Some(ok) => Ok(Output::Fallible(ok)),
        None => Err(fail(
            ty,
            "cannot tell the value type of this `Result`: write it with its \
             type arguments, e.g. `Result<i64, MyError>`",
        )),
    }
}

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

/// The option names accepted by `#[task(...)]`.
const OPTION_NAMES: &[&str] = &[
    "max_retries",
    "retry_for",
    "running_concurrency",
    "registration_concurrency",
    "key_arguments",
    "on_diff_non_key_args_raise",
    "reroute_on_concurrency_control",
    "parallel_batch_size",
];

/// A concurrency control mode (`pynenc::task::ConcurrencyControl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Concurrency {
    Disabled,
    Task,
    Arguments,
    Keys,
}

impl Concurrency {
    /// Parses a mode name in any case (same aliases as the configuration).
    fn from_name(name: &str) -> Option<Concurrency> {
        match name.to_ascii_lowercase().as_str() {
            "disabled" | "none" | "off" => Some(Concurrency::Disabled),
            "task" => Some(Concurrency::Task),
            "arguments" | "args" => Some(Concurrency::Arguments),
            "keys" | "key" => Some(Concurrency::Keys),
            _ => None,
        }
    }

    fn variant(self) -> Ident {
        let name = match self {
            Concurrency::Disabled => "Disabled",
            Concurrency::Task => "Task",
            Concurrency::Arguments => "Arguments",
            Concurrency::Keys => "Keys",
        };
        Ident::new(name, Span::call_site())
    }
}

/// The options written in `#[task(...)]`; `None` keeps pynenc's default.
#[derive(Debug, Default)]
struct TaskOptions {
    max_retries: Option<u32>,
    retry_for: Option<Vec<String>>,
    running_concurrency: Option<Concurrency>,
    registration_concurrency: Option<Concurrency>,
    key_arguments: Option<Vec<String>>,
    on_diff_non_key_args_raise: Option<bool>,
    reroute_on_concurrency_control: Option<bool>,
    parallel_batch_size: Option<u64>,
}

/// One `name = value` pair of the attribute.
struct RawOption {
    name: Ident,
    value: Expr,
}

/// Parses and checks the attribute's options against the task's parameters.
fn parse_options(task: &str, params: &[String], attr: TokenStream2) -> syn::Result<TaskOptions> {
    let raw = parse_raw_options(task, attr)?;
    let mut options = TaskOptions::default();
    let mut errors = Errors::default();
    let mut seen: HashSet<String> = HashSet::new();
    // Where a `Keys` concurrency control was written, for the cross-check.
    let mut keys_at: Option<(String, Expr)> = None;

    for RawOption { name, value } in raw {
        let option = name.to_string();
        let fail = |tokens: &dyn ToTokens, message: &str| {
            syn::Error::new_spanned(
                tokens,
                format!("task `{task}`: option `{option}`: {message}"),
            )
        };
        if !OPTION_NAMES.contains(&option.as_str()) {
            errors.push(syn::Error::new_spanned(
                &name,
                format!(
                    "task `{task}`: unknown option `{option}` (accepted options: {})",
                    OPTION_NAMES.join(", ")
                ),
            ));
            continue;
        }
        if !seen.insert(option.clone()) {
            errors.push(fail(&name, "given more than once"));
            continue;
        }
        let value_expr = strip_expr(&value);
        if let Err(err) = set_option(
            &mut options,
            &mut keys_at,
            params,
            &option,
            value_expr,
            &fail,
        ) {
            errors.push(err);
        }
    }

    if let Some((option, value)) = keys_at {
        // An invalid `key_arguments` was already reported.
        let no_keys = match &options.key_arguments {
            Some(keys) => keys.is_empty(),
            None => !seen.contains("key_arguments"),
        };
        if no_keys {
            let known = if params.is_empty() {
                "the task has no parameters".to_string()
            } else {
                format!("parameters: {}", params.join(", "))
            };
            errors.push(syn::Error::new_spanned(
                value,
                format!(
                    "task `{task}`: option `{option}`: concurrency control `Keys` needs \
                     `key_arguments = [...]` naming at least one parameter ({known})"
                ),
            ));
        }
    }
    errors.finish()?;
    Ok(options)
}

/// Builds an error about the option being set.
type Fail<'a> = &'a dyn Fn(&dyn ToTokens, &str) -> syn::Error;

/// Checks the value of one (known) option and records it.
fn set_option(
    options: &mut TaskOptions,
    keys_at: &mut Option<(String, Expr)>,
    params: &[String],
    option: &str,
    value_expr: &Expr,
    fail: Fail<'_>,
) -> syn::Result<()> {
    match option {
        "max_retries" => {
            let n = int_literal(value_expr, &["u32"]).ok_or_else(|| {
                fail(
                    value_expr,
                    "expected a `u32` integer literal, e.g. `max_retries = 3`",
                )
            })?;
            let n = n
                .base10_parse::<u32>()
                .map_err(|_| fail(value_expr, "the value does not fit in a `u32`"))?;
            options.max_retries = Some(n);
        }
        "parallel_batch_size" => {
            let n = int_literal(value_expr, &["usize"]).ok_or_else(|| {
                fail(
                    value_expr,
                    "expected a `usize` integer literal, e.g. `parallel_batch_size = 100`",
                )
            })?;
            let n = n
                .base10_parse::<u64>()
                .map_err(|_| fail(value_expr, "the value is too large"))?;
            if n == 0 {
                return Err(fail(value_expr, "must be at least 1"));
            }
            options.parallel_batch_size = Some(n);
        }
        "retry_for" => {
            let kinds = string_array(value_expr).map_err(|(t, m)| fail(&t, &m))?;
            let mut values = Vec::new();
            for (kind, lit) in kinds {
                if kind.trim().is_empty() {
                    return Err(fail(&lit, "an error kind cannot be empty"));
                }
                values.push(kind);
            }
            options.retry_for = Some(values);
        }
        "key_arguments" => {
            let keys = string_array(value_expr).map_err(|(t, m)| fail(&t, &m))?;
            let mut values: Vec<String> = Vec::new();
            for (key, lit) in keys {
                if !params.contains(&key) {
                    let known = if params.is_empty() {
                        "the task has no parameters".to_string()
                    } else {
                        format!("parameters: {}", params.join(", "))
                    };
                    return Err(fail(&lit, &format!("`{key}` is not a parameter ({known})")));
                }
                if values.contains(&key) {
                    return Err(fail(&lit, &format!("`{key}` is listed more than once")));
                }
                values.push(key);
            }
            options.key_arguments = Some(values);
        }
        "running_concurrency" | "registration_concurrency" => {
            let mode = concurrency(value_expr).map_err(|(t, m)| fail(&t, &m))?;
            if mode == Concurrency::Keys && keys_at.is_none() {
                *keys_at = Some((option.to_string(), value_expr.clone()));
            }
            if option == "running_concurrency" {
                options.running_concurrency = Some(mode);
            } else {
                options.registration_concurrency = Some(mode);
            }
        }
        "on_diff_non_key_args_raise" | "reroute_on_concurrency_control" => {
            let flag = match value_expr {
                Expr::Lit(syn::ExprLit {
                    lit: Lit::Bool(b), ..
                }) => b.value,
                other => return Err(fail(other, "expected `true` or `false`")),
            };
            if option == "on_diff_non_key_args_raise" {
                options.on_diff_non_key_args_raise = Some(flag);
            } else {
                options.reroute_on_concurrency_control = Some(flag);
            }
        }
        _ => unreachable!("every accepted option is handled"),
    }
    Ok(())
}

/// Parses `name = value, ...` (a trailing comma is allowed).
fn parse_raw_options(task: &str, attr: TokenStream2) -> syn::Result<Vec<RawOption>> {
    let parser = |input: ParseStream| -> syn::Result<Vec<RawOption>> {
        let mut options = Vec::new();
        while !input.is_empty() {
            let name: Ident = input.call(Ident::parse_any).map_err(|e| {
                syn::Error::new(
                    e.span(),
                    format!(
                        "task `{task}`: expected an option name, as in `#[task(max_retries = 3)]`"
                    ),
                )
            })?;
            if !input.peek(Token![=]) {
                return Err(syn::Error::new_spanned(
                    &name,
                    format!("task `{task}`: option `{name}` needs a value: write `{name} = ...`"),
                ));
            }
            input.parse::<Token![=]>()?;
            let value: Expr = input.parse().map_err(|e| {
                syn::Error::new(e.span(), format!("task `{task}`: option `{name}`: {e}"))
            })?;
            options.push(RawOption { name, value });
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    format!("task `{task}`: expected `,` between options"),
                )
            })?;
        }
        Ok(options)
    };
    parser.parse2(attr)
}

/// Removes parentheses and invisible groups around an expression.
fn strip_expr(expr: &Expr) -> &Expr {
    match expr {
        Expr::Paren(p) => strip_expr(&p.expr),
        Expr::Group(g) => strip_expr(&g.expr),
        other => other,
    }
}

/// An integer literal without suffix or with one of `suffixes`.
fn int_literal<'a>(expr: &'a Expr, suffixes: &[&str]) -> Option<&'a syn::LitInt> {
    match expr {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Int(n), ..
        }) if n.suffix().is_empty() || suffixes.contains(&n.suffix()) => Some(n),
        _ => None,
    }
}

/// A failed value: the tokens to point at and the message.
type ValueError = (TokenStream2, String);

/// An array of string literals: each value with its literal.
fn string_array(expr: &Expr) -> Result<Vec<(String, syn::LitStr)>, ValueError> {
    let Expr::Array(array) = expr else {
        return Err((
            expr.to_token_stream(),
            "expected an array of string literals, e.g. `[\"a\", \"b\"]`".into(),
        ));
    };
    array
        .elems
        .iter()
        .map(|elem| match strip_expr(elem) {
            Expr::Lit(syn::ExprLit {
                lit: Lit::Str(s), ..
            }) => Ok((s.value(), s.clone())),
            other => Err((other.to_token_stream(), "expected a string literal".into())),
        })
        .collect()
}

/// A concurrency control: an identifier, a path ending in one, or a string.
fn concurrency(expr: &Expr) -> Result<Concurrency, ValueError> {
    let expected = "expected `Disabled`, `Task`, `Arguments` or `Keys`";
    let name = match expr {
        Expr::Path(p) if p.qself.is_none() && p.attrs.is_empty() => match p.path.segments.last() {
            Some(last) if last.arguments.is_none() => last.ident.unraw().to_string(),
            _ => return Err((expr.to_token_stream(), expected.into())),
        },
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(s), ..
        }) => s.value(),
        other => return Err((other.to_token_stream(), expected.into())),
    };
    Concurrency::from_name(&name).ok_or_else(|| {
        (
            expr.to_token_stream(),
            format!("unknown concurrency control `{name}` ({expected})"),
        )
    })
}

// ---------------------------------------------------------------------------
// Code generation
// ---------------------------------------------------------------------------

/// The `TaskOptionsSpec` expression of the options.
fn options_tokens(options: &TaskOptions) -> TokenStream2 {
    let mut fields = Vec::new();
    if let Some(n) = options.max_retries {
        let n = Literal::u32_unsuffixed(n);
        fields.push(quote!(max_retries: #n));
    }
    if let Some(kinds) = &options.retry_for {
        fields.push(quote!(retry_for: &[#(#kinds),*]));
    }
    if let Some(mode) = options.running_concurrency {
        let v = mode.variant();
        fields.push(quote!(running_concurrency: ::pynenc::task::ConcurrencyControl::#v));
    }
    if let Some(mode) = options.registration_concurrency {
        let v = mode.variant();
        fields.push(quote!(registration_concurrency: ::pynenc::task::ConcurrencyControl::#v));
    }
    if let Some(keys) = &options.key_arguments {
        fields.push(quote!(key_arguments: &[#(#keys),*]));
    }
    if let Some(flag) = options.on_diff_non_key_args_raise {
        fields.push(quote!(on_diff_non_key_args_raise: #flag));
    }
    if let Some(flag) = options.reroute_on_concurrency_control {
        fields.push(quote!(reroute_on_concurrency_control: #flag));
    }
    if let Some(n) = options.parallel_batch_size {
        let n = Literal::u64_unsuffixed(n);
        fields.push(quote!(parallel_batch_size: #n));
    }
    if fields.is_empty() {
        quote!(::pynenc::task::TaskOptionsSpec::DEFAULT)
    } else {
        quote! {
            ::pynenc::task::TaskOptionsSpec {
                #(#fields,)*
                ..::pynenc::task::TaskOptionsSpec::DEFAULT
            }
        }
    }
}

/// Every identifier in some tokens.
fn collect_idents(tokens: TokenStream2, out: &mut HashSet<String>) {
    for tree in tokens {
        match tree {
            TokenTree::Ident(i) => {
                out.insert(i.unraw().to_string());
            }
            TokenTree::Group(g) => collect_idents(g.stream(), out),
            _ => {}
        }
    }
}

/// `base`, or `base` with underscores appended, avoiding `used` names.
fn fresh_ident(base: &str, used: &HashSet<String>) -> Ident {
    let mut name = base.to_string();
    while used.contains(&name) {
        name.push('_');
    }
    Ident::new(&name, Span::call_site())
}

/// The last path segment of a type, if it is a path.
fn last_segment(ty: &Type) -> Option<String> {
    match strip_type(ty) {
        Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
        _ => None,
    }
}

/// The function, unchanged, followed by its task module.
fn generate(function: &ItemFn, task: &TaskFn, options: &TaskOptions) -> TokenStream2 {
    let fn_ident = &function.sig.ident;
    let vis = &function.vis;
    let name = &task.name;
    let idents: Vec<&Ident> = task.params.iter().map(|p| &p.ident).collect();
    let names: Vec<&String> = task.params.iter().map(|p| &p.name).collect();
    let tys: Vec<&Type> = task.params.iter().map(|p| &p.ty).collect();
    let result = task.output.result_type();
    let options = options_tokens(options);

    // Docs of the module: a heading, then the function's own docs.
    let is_raw = fn_ident.to_string().starts_with("r#");
    let fn_link = if is_raw {
        format!("`{name}`")
    } else {
        format!("[`{name}`](fn@{name})")
    };
    let heading =
        format!("Task `{name}`: the pynenc API of {fn_link} (generated by `#[pynenc::task]`).");
    let fn_docs: Vec<&syn::Attribute> = function
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .collect();
    let separator = if fn_docs.is_empty() {
        quote!()
    } else {
        quote!(#[doc = ""])
    };
    let cfgs = function.attrs.iter().filter(|a| a.path().is_ident("cfg"));
    let super_link = if is_raw {
        format!("`{name}`")
    } else {
        format!("[`{name}`](fn@super::{name})")
    };

    // The body, decoding each argument then calling the function.
    let decode = task.params.iter().map(|p| {
        let (ident, name, ty) = (&p.ident, &p.name, &p.ty);
        quote! {
            let #ident: #ty = __pynenc_input.arg::<#ty>(#name)?;
        }
    });
    let await_call = if task.is_async {
        quote!(.await)
    } else {
        quote!()
    };
    let call = quote!(super::#fn_ident(#(#idents),*) #await_call);
    // The result type is written in turbofish so that a missing `Serialize`
    // is reported on the user's type.
    let finish = match &task.output {
        Output::Unit => quote! {
            #call;
            __pynenc_input.output::<()>(&())
        },
        Output::Value(_) => quote! {
            let __pynenc_value = #call;
            __pynenc_input.output::<#result>(&__pynenc_value)
        },
        Output::Fallible(_) => quote! {
            let __pynenc_value = #call;
            __pynenc_input.output_result::<#result, _>(__pynenc_value)
        },
    };
    let (runner, body) = if task.is_async {
        // Spanned on the function name, so that a future that is not `Send`
        // is reported there (one span for the whole item keeps the local
        // variable's hygiene consistent).
        let run = quote_spanned! {fn_ident.span()=>
            #[doc(hidden)]
            fn __pynenc_run(__pynenc_input: ::pynenc::__private::TaskInput) -> ::pynenc::__private::TaskFuture {
                ::std::boxed::Box::pin(__pynenc_body(__pynenc_input))
            }
        };
        (
            quote! {
                #[doc(hidden)]
                async fn __pynenc_body(
                    __pynenc_input: ::pynenc::__private::TaskInput,
                ) -> ::pynenc::__private::TaskOutput {
                    #(#decode)*
                    #finish
                }
                #run
            },
            quote!(::pynenc::__private::TaskBody::Async(__pynenc_run)),
        )
    } else {
        (
            quote! {
                #[doc(hidden)]
                fn __pynenc_run_sync(
                    __pynenc_input: ::pynenc::__private::TaskInput,
                ) -> ::pynenc::__private::TaskOutput {
                    #(#decode)*
                    #finish
                }
            },
            quote!(::pynenc::__private::TaskBody::Sync(__pynenc_run_sync)),
        )
    };

    // `IntoArguments` for `Params`, the tuple, the bare value or `()`.
    let field_docs = names.iter().map(|n| format!("Argument `{n}`."));
    let params_impl = if task.params.is_empty() {
        quote! {
            impl ::pynenc::task::IntoArguments<Params> for Params {
                fn into_arguments(
                    self,
                    _serializer: ::pynenc::Serializer,
                ) -> ::pynenc::Result<::pynenc::Arguments> {
                    ::core::result::Result::Ok(::pynenc::Arguments::new())
                }
            }
            impl ::pynenc::task::IntoArguments<Params> for () {
                fn into_arguments(
                    self,
                    _serializer: ::pynenc::Serializer,
                ) -> ::pynenc::Result<::pynenc::Arguments> {
                    ::core::result::Result::Ok(::pynenc::Arguments::new())
                }
            }
        }
    } else {
        let inserts = task.params.iter().map(|p| {
            let (ident, name, ty) = (&p.ident, &p.name, &p.ty);
            quote! {
                __pynenc_arguments.insert_param::<#ty>(serializer, #name, &self.#ident)?;
            }
        });
        let indices = (0..task.params.len()).map(syn::Index::from);
        let bare = match task.params.as_slice() {
            [only] if last_segment(&only.ty).as_deref() != Some("Arguments") => {
                let (ident, ty) = (&only.ident, &only.ty);
                quote! {
                    impl ::pynenc::task::IntoArguments<Params> for #ty {
                        fn into_arguments(
                            self,
                            serializer: ::pynenc::Serializer,
                        ) -> ::pynenc::Result<::pynenc::Arguments> {
                            ::pynenc::task::IntoArguments::<Params>::into_arguments(
                                Params { #ident: self },
                                serializer,
                            )
                        }
                    }
                }
            }
            _ => quote!(),
        };
        quote! {
            impl ::pynenc::task::IntoArguments<Params> for Params {
                fn into_arguments(
                    self,
                    serializer: ::pynenc::Serializer,
                ) -> ::pynenc::Result<::pynenc::Arguments> {
                    let mut __pynenc_arguments = ::pynenc::Arguments::new();
                    #(#inserts)*
                    ::core::result::Result::Ok(__pynenc_arguments)
                }
            }
            impl ::pynenc::task::IntoArguments<Params> for (#(#tys,)*) {
                fn into_arguments(
                    self,
                    serializer: ::pynenc::Serializer,
                ) -> ::pynenc::Result<::pynenc::Arguments> {
                    ::pynenc::task::IntoArguments::<Params>::into_arguments(
                        Params { #(#idents: self.#indices,)* },
                        serializer,
                    )
                }
            }
            #bare
        }
    };

    // Names of the generated API that must not clash with the user's.
    let mut used = HashSet::new();
    collect_idents(result.clone(), &mut used);
    for ty in &tys {
        collect_idents(ty.to_token_stream(), &mut used);
    }
    let arg_generic = fresh_ident("A", &used);
    let items_generic = fresh_ident("I", &used);
    let app = if names.iter().any(|n| *n == "app") {
        format_ident!("__pynenc_app")
    } else {
        format_ident!("app")
    };
    let params_value = quote!(Params { #(#idents),* });
    let module_doc_params = format!("Named arguments of task `{name}`, as passed to {super_link}.");

    quote! {
        #function

        #(#cfgs)*
        #[doc = #heading]
        #separator
        #(#fn_docs)*
        #[allow(
            non_snake_case,
            non_camel_case_types,
            non_upper_case_globals,
            dead_code,
            unused_imports,
            unused_qualifications,
            unreachable_pub,
            missing_debug_implementations,
            clippy::all,
            clippy::pedantic,
            clippy::nursery,
            clippy::restriction
        )]
        #vis mod #fn_ident {
            use super::*;

            /// The task definition, registered in the process-wide registry.
            pub static DEFINITION: ::pynenc::task::TaskDefinition = ::pynenc::task::TaskDefinition {
                task_id: ::core::module_path!(),
                params: &[#(#names),*],
                options: #options,
                body: #body,
            };

            ::pynenc::__private::inventory::submit! {
                ::pynenc::__private::TaskRegistration(&DEFINITION)
            }

            #[doc = #module_doc_params]
            pub struct Params {
                #(
                    #[doc = #field_docs]
                    pub #idents: #tys,
                )*
            }

            #params_impl

            #runner

            /// A typed handle on the task.
            pub fn task() -> ::pynenc::task::Task<Params, #result> {
                ::pynenc::task::Task::new(&DEFINITION)
            }

            /// Serialized arguments for a call (with the current app's serializer).
            pub fn args(#(#idents: #tys),*) -> ::pynenc::Result<::pynenc::Arguments> {
                self::task().args(#params_value)
            }

            /// Calls the task on the current app; returns the invocation
            /// (await `.result()` on it for the value).
            pub async fn call(#(#idents: #tys),*) -> ::pynenc::Result<::pynenc::Invocation<#result>> {
                self::task().call(#params_value).await
            }

            /// Calls the task on a given app; returns the invocation.
            pub async fn call_on(
                #app: &::pynenc::Pynenc,
                #(#idents: #tys),*
            ) -> ::pynenc::Result<::pynenc::Invocation<#result>> {
                self::task().call_on(#app, #params_value).await
            }

            /// Calls the task on the current app and waits for its value.
            pub async fn direct(#(#idents: #tys),*) -> ::pynenc::Result<#result> {
                self::task().direct(#params_value).await
            }

            /// Calls the task once per item (tuples, `Params` or `Arguments`)
            /// on the current app, routed in batches of `parallel_batch_size`.
            pub async fn parallelize<#arg_generic, #items_generic>(
                items: #items_generic,
            ) -> ::pynenc::Result<::pynenc::InvocationGroup<#result>>
            where
                #arg_generic: ::pynenc::task::IntoArguments<Params>,
                #items_generic: ::std::iter::IntoIterator<Item = #arg_generic>,
            {
                self::task().parallelize(items).await
            }

            /// Calls the task once per item on a given app, routed in batches
            /// of `parallel_batch_size`.
            pub async fn parallelize_on<#arg_generic, #items_generic>(
                app: &::pynenc::Pynenc,
                items: #items_generic,
            ) -> ::pynenc::Result<::pynenc::InvocationGroup<#result>>
            where
                #arg_generic: ::pynenc::task::IntoArguments<Params>,
                #items_generic: ::std::iter::IntoIterator<Item = #arg_generic>,
            {
                self::task().parallelize_on(app, items).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(o.max_retries.is_none());
        assert!(o.retry_for.is_none());
        assert!(o.running_concurrency.is_none());
        assert!(o.parallel_batch_size.is_none());
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
            reroute_on_concurrency_control = false,
            parallel_batch_size = 10,
        ));
        assert_eq!(o.max_retries, Some(2));
        assert_eq!(o.retry_for, Some(vec!["Timeout".into(), "IoError".into()]));
        assert_eq!(o.running_concurrency, Some(Concurrency::Task));
        assert_eq!(o.registration_concurrency, Some(Concurrency::Keys));
        assert_eq!(o.key_arguments, Some(vec!["y".into()]));
        assert_eq!(o.on_diff_non_key_args_raise, Some(true));
        assert_eq!(o.reroute_on_concurrency_control, Some(false));
        assert_eq!(o.parallel_batch_size, Some(10));
        let spec = compact(options_tokens(&o));
        for part in [
            "max_retries:2,",
            "retry_for:&[\"Timeout\",\"IoError\"],",
            "running_concurrency:::pynenc::task::ConcurrencyControl::Task,",
            "registration_concurrency:::pynenc::task::ConcurrencyControl::Keys,",
            "key_arguments:&[\"y\"],",
            "on_diff_non_key_args_raise:true,",
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
            (quote!(Disabled), Concurrency::Disabled),
            (quote!(task), Concurrency::Task),
            (quote!(ARGUMENTS), Concurrency::Arguments),
            (
                quote!(ConcurrencyControl::Arguments),
                Concurrency::Arguments,
            ),
            (quote!("Task"), Concurrency::Task),
            (quote!("disabled"), Concurrency::Disabled),
        ] {
            let o = options(quote!(running_concurrency = #value));
            assert_eq!(o.running_concurrency, Some(expected), "{value}");
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
    fn suffixed_integers() {
        assert_eq!(options(quote!(max_retries = 3u32)).max_retries, Some(3));
        assert_eq!(
            options(quote!(parallel_batch_size = 5usize)).parallel_batch_size,
            Some(5)
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
        assert_eq!(o.running_concurrency, Some(Concurrency::Keys));
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
                quote!(fn f(&self) {}),
                "task `f`: a task cannot take `self`: tasks are module-level functions, not methods",
            ),
            (
                quote!(fn f<T>(x: T) {}),
                "task `f`: a task cannot have generic parameters or lifetimes",
            ),
            (
                quote!(fn f<'a>(x: i64) {}),
                "task `f`: a task cannot have generic parameters or lifetimes",
            ),
            (
                quote!(fn f(x: i64) where i64: Copy {}),
                "task `f`: a task cannot have a `where` clause",
            ),
            (
                quote!(fn f((a, b): (i32, i32)) {}),
                "task `f`: parameters must be simple identifiers like `x: i64`, not patterns",
            ),
            (
                quote!(fn f(ref x: i32) {}),
                "task `f`: parameters must be simple identifiers",
            ),
            (quote!(fn f(_: i32) {}), "task `f`: parameters need a name"),
            (
                quote!(fn f(x: &str) {}),
                "task `f`: parameter `x`: references are not supported",
            ),
            (
                quote!(fn f(x: Vec<&'static str>) {}),
                "task `f`: parameter `x`: references are not supported",
            ),
            (
                quote!(fn f(x: Cow<'a, str>) {}),
                "task `f`: parameter `x`: lifetimes other than `'static` are not supported",
            ),
            (
                quote!(fn f(x: impl Serialize) {}),
                "task `f`: parameter `x`: `impl Trait` is not supported",
            ),
            (
                quote!(fn f(x: Box<dyn Fn()>) {}),
                "task `f`: parameter `x`: trait objects are not supported",
            ),
            (
                quote!(unsafe fn f(x: i64) {}),
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
            compact.contains("insert_param::<Arguments>(serializer,\"type\",&self.r#type)"),
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
}
