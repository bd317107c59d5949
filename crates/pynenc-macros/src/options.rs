//! The options of `#[task(...)]`, read with the vocabulary of
//! `pynenc-options` (names, kinds, rules) that the configuration and the
//! runtime use too.

use std::collections::HashSet;

use proc_macro2::TokenStream as TokenStream2;
use pynenc_options::{
    ConcurrencyControl, OptionDef, OptionKind, OptionProblem, RegistrationScopeName,
    TaskOptionsSpec,
};
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::{Expr, Ident, Lit, Token};

use crate::errors::Errors;

/// One option value written in the attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    /// [`OptionKind::Count`].
    Count(u32),
    /// [`OptionKind::BatchSize`].
    BatchSize(u64),
    /// [`OptionKind::Flag`].
    Flag(bool),
    /// [`OptionKind::ErrorKinds`] and [`OptionKind::ParamNames`].
    List(Vec<String>),
    /// [`OptionKind::Concurrency`].
    Concurrency(ConcurrencyControl),
    /// [`OptionKind::Scope`].
    Scope(RegistrationScopeName),
    /// [`OptionKind::Seconds`]: whole seconds.
    Seconds(u32),
}

/// The options written in `#[task(...)]`, in the order written; an option
/// not written keeps pynenc's default.
#[derive(Debug, Default)]
pub(crate) struct TaskOptions {
    pub(crate) values: Vec<(&'static OptionDef, Value)>,
}

impl TaskOptions {
    /// The value written for `name`, if any.
    pub(crate) fn get(&self, name: &str) -> Option<&Value> {
        self.values
            .iter()
            .find(|(def, _)| def.name == name)
            .map(|(_, v)| v)
    }

    /// The concurrency control written for `name`, else the default.
    fn concurrency(&self, name: &str) -> ConcurrencyControl {
        match self.get(name) {
            Some(Value::Concurrency(c)) => *c,
            _ => ConcurrencyControl::Disabled,
        }
    }

    /// The registration scope written, else the default.
    fn registration_scope(&self) -> RegistrationScopeName {
        match self.get("registration_scope") {
            Some(Value::Scope(s)) => *s,
            _ => TaskOptionsSpec::DEFAULT.registration_scope,
        }
    }

    /// The cache time written, else the default.
    fn registration_cache_seconds(&self) -> u32 {
        match self.get("registration_cache_seconds") {
            Some(Value::Seconds(n)) => *n,
            _ => TaskOptionsSpec::DEFAULT.registration_cache_seconds,
        }
    }
}

/// One `name = value` pair of the attribute.
struct RawOption {
    name: Ident,
    value: Expr,
}

/// Builds an error about the option being set.
type Fail<'a> = &'a dyn Fn(&dyn ToTokens, &str) -> syn::Error;

/// Parses and checks the attribute's options against the task's parameters.
pub(crate) fn parse_options(
    task: &str,
    params: &[String],
    attr: TokenStream2,
) -> syn::Result<TaskOptions> {
    let raw = parse_raw_options(task, attr)?;
    let param_refs: Vec<&str> = params.iter().map(String::as_str).collect();
    let mut options = TaskOptions::default();
    let mut errors = Errors::default();
    let mut seen: HashSet<String> = HashSet::new();
    // where each concurrency control was written, for the cross-check
    let mut written: Vec<(&'static str, Expr)> = Vec::new();

    for RawOption { name, value } in raw {
        let option = name.to_string();
        let fail = |tokens: &dyn ToTokens, message: &str| {
            syn::Error::new_spanned(
                tokens,
                format!("task `{task}`: option `{option}`: {message}"),
            )
        };
        let Some(def) = pynenc_options::find(&option) else {
            errors.push(syn::Error::new_spanned(
                &name,
                format!(
                    "task `{task}`: unknown option `{option}` (accepted options: {})",
                    pynenc_options::names()
                ),
            ));
            continue;
        };
        if !seen.insert(option.clone()) {
            errors.push(fail(&name, "given more than once"));
            continue;
        }
        let value_expr = strip_expr(&value);
        match parse_value(def, value_expr, &param_refs, &fail) {
            Ok(v) => {
                written.push((def.name, value_expr.clone()));
                options.values.push((def, v));
            }
            Err(err) => errors.push(err),
        }
    }

    // the rules that tie options together, once each option was read; an
    // option written with an invalid value was already reported, so a rule
    // it takes part in is not checked against its default
    let invalid = |name: &str| seen.contains(name) && options.get(name).is_none();
    let key_args_invalid = invalid("key_arguments");
    let has_keys = matches!(options.get("key_arguments"), Some(Value::List(l)) if !l.is_empty());
    let keys_rule = pynenc_options::check_keys_have_arguments(
        options.concurrency("running_concurrency"),
        options.concurrency("registration_concurrency"),
        has_keys,
        &param_refs,
    );
    let mut report = |problem: OptionProblem| {
        let OptionProblem { option, message } = problem;
        // a rule broken by options all left at their default cannot happen,
        // so the option at fault was written
        if let Some((_, at)) = written.iter().find(|(name, _)| *name == option) {
            errors.push(syn::Error::new_spanned(
                at,
                format!("task `{task}`: option `{option}`: {message}"),
            ));
        }
    };
    if let (Err(problem), false) = (keys_rule, key_args_invalid) {
        report(problem);
    }
    let scope_inputs_invalid = ["registration_concurrency", "registration_cache_seconds"]
        .into_iter()
        .any(invalid);
    let scope_rule = pynenc_options::check_registration_scope(
        options.registration_scope(),
        options.concurrency("registration_concurrency"),
        options.registration_cache_seconds(),
    );
    if let (Err(problem), false) = (scope_rule, scope_inputs_invalid) {
        report(problem);
    }
    errors.finish()?;
    Ok(options)
}

/// Reads the value of one (known) option according to its kind.
fn parse_value(
    def: &OptionDef,
    value_expr: &Expr,
    params: &[&str],
    fail: Fail<'_>,
) -> syn::Result<Value> {
    let problem = |at: &dyn ToTokens, p: OptionProblem| fail(at, &p.message);
    match def.kind {
        OptionKind::Count => {
            let n = int_literal(value_expr, &["u32"]).ok_or_else(|| {
                fail(
                    value_expr,
                    &format!("expected a `u32` integer literal, e.g. `{} = 3`", def.name),
                )
            })?;
            let n = n
                .base10_parse::<u32>()
                .map_err(|_| fail(value_expr, "the value does not fit in a `u32`"))?;
            Ok(Value::Count(n))
        }
        OptionKind::BatchSize => {
            let n = int_literal(value_expr, &["usize"]).ok_or_else(|| {
                fail(
                    value_expr,
                    &format!(
                        "expected a `usize` integer literal, e.g. `{} = 100`",
                        def.name
                    ),
                )
            })?;
            let n = n
                .base10_parse::<u64>()
                .map_err(|_| fail(value_expr, "the value is too large"))?;
            pynenc_options::check_batch_size(n).map_err(|p| problem(value_expr, p))?;
            Ok(Value::BatchSize(n))
        }
        OptionKind::Flag => match value_expr {
            Expr::Lit(syn::ExprLit {
                lit: Lit::Bool(b), ..
            }) => Ok(Value::Flag(b.value)),
            other => Err(fail(other, "expected `true` or `false`")),
        },
        OptionKind::ErrorKinds => {
            let kinds = string_array(value_expr).map_err(|(t, m)| fail(&t, &m))?;
            for (kind, lit) in &kinds {
                pynenc_options::check_retry_for(&[kind]).map_err(|p| problem(lit, p))?;
            }
            Ok(Value::List(kinds.into_iter().map(|(k, _)| k).collect()))
        }
        OptionKind::ParamNames => {
            let keys = string_array(value_expr).map_err(|(t, m)| fail(&t, &m))?;
            let names: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
            // checked one more name at a time, to point at the one at fault
            for (i, (_, lit)) in keys.iter().enumerate() {
                pynenc_options::check_param_names(def.name, &names[..=i], params)
                    .map_err(|p| problem(lit, p))?;
            }
            Ok(Value::List(keys.into_iter().map(|(k, _)| k).collect()))
        }
        OptionKind::Concurrency => concurrency(value_expr)
            .map(Value::Concurrency)
            .map_err(|(t, m)| fail(&t, &m)),
        OptionKind::Scope => scope(value_expr)
            .map(Value::Scope)
            .map_err(|(t, m)| fail(&t, &m)),
        OptionKind::Seconds => {
            let n = int_literal(value_expr, &["u32"]).ok_or_else(|| {
                fail(
                    value_expr,
                    &format!(
                        "expected a whole number of seconds as a `u32` integer literal, e.g. `{} = 300`",
                        def.name
                    ),
                )
            })?;
            let n = n
                .base10_parse::<u32>()
                .map_err(|_| fail(value_expr, "the value does not fit in a `u32`"))?;
            Ok(Value::Seconds(n))
        }
    }
}

/// Parses `name = value, ...` (a trailing comma is allowed).
fn parse_raw_options(task: &str, attr: TokenStream2) -> syn::Result<Vec<RawOption>> {
    let parser = |input: ParseStream<'_>| -> syn::Result<Vec<RawOption>> {
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
            if input.is_empty() || input.peek(Token![,]) {
                return Err(syn::Error::new_spanned(
                    &name,
                    format!("task `{task}`: option `{name}` has no value after `=`"),
                ));
            }
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

/// A name written as an identifier, a path ending in one, or a string
/// literal; else the error `expected`.
fn name_value(expr: &Expr, expected: &str) -> Result<String, ValueError> {
    match expr {
        Expr::Path(p) if p.qself.is_none() && p.attrs.is_empty() => match p.path.segments.last() {
            Some(last) if last.arguments.is_none() => Ok(last.ident.unraw().to_string()),
            _ => Err((expr.to_token_stream(), expected.into())),
        },
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(s.value()),
        other => Err((other.to_token_stream(), expected.into())),
    }
}

/// A registration scope: an identifier, a path ending in one, or a string,
/// in any case, with the aliases the configuration accepts.
fn scope(expr: &Expr) -> Result<RegistrationScopeName, ValueError> {
    let expected = "expected `Queued`, `Active` or `Cached`";
    let name = name_value(expr, expected)?;
    RegistrationScopeName::from_name(&name).ok_or_else(|| {
        (
            expr.to_token_stream(),
            format!("unknown registration scope `{name}` ({expected})"),
        )
    })
}

/// A concurrency control: an identifier, a path ending in one, or a string,
/// in any case, with the aliases the configuration accepts.
fn concurrency(expr: &Expr) -> Result<ConcurrencyControl, ValueError> {
    let expected = "expected `Disabled`, `Task`, `Arguments` or `Keys`";
    let name = name_value(expr, expected)?;
    ConcurrencyControl::from_name(&name).ok_or_else(|| {
        (
            expr.to_token_stream(),
            format!("unknown concurrency control `{name}` ({expected})"),
        )
    })
}
