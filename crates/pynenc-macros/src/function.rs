//! The annotated function: its name, parameters and result, checked
//! against what a task can be.

use proc_macro2::TokenStream as TokenStream2;
use quote::{quote, ToTokens};
use syn::ext::IdentExt;
use syn::{FnArg, GenericArgument, Ident, ItemFn, Pat, PathArguments, ReturnType, Type};

use crate::errors::Errors;

/// One parameter of a task function.
#[derive(Clone)]
pub(crate) struct Param {
    /// The identifier as written (possibly raw, without `mut`).
    pub(crate) ident: Ident,
    /// The parameter name (raw prefix removed): the argument's name.
    pub(crate) name: String,
    /// The parameter type.
    pub(crate) ty: Type,
}

/// What a task function returns.
#[derive(Clone)]
pub(crate) enum Output {
    /// Nothing: `()`.
    Unit,
    /// A value of this type.
    Value(Type),
    /// A `Result` whose `Ok` type is this one.
    Fallible(Type),
}

impl Output {
    /// The task's result type `R`.
    pub(crate) fn result_type(&self) -> TokenStream2 {
        match self {
            Output::Unit => quote!(()),
            Output::Value(ty) | Output::Fallible(ty) => ty.to_token_stream(),
        }
    }
}

/// A validated task function.
#[derive(Clone)]
pub(crate) struct TaskFn {
    /// The function name (raw prefix removed).
    pub(crate) name: String,
    /// Whether it is an `async fn`.
    pub(crate) is_async: bool,
    /// Its parameters, in order.
    pub(crate) params: Vec<Param>,
    /// What it returns.
    pub(crate) output: Output,
}

impl TaskFn {
    /// Checks the function's signature; reports every problem found.
    pub(crate) fn from_item(function: &ItemFn) -> syn::Result<TaskFn> {
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

/// Removes parentheses and invisible groups around a type.
pub(crate) fn strip_type(ty: &Type) -> &Type {
    match ty {
        Type::Paren(p) => strip_type(&p.elem),
        Type::Group(g) => strip_type(&g.elem),
        other => other,
    }
}

/// The first part of a type that cannot be a task argument or result, with
/// the reason.
pub(crate) fn unsupported_type(ty: &Type) -> Option<(TokenStream2, &'static str)> {
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
pub(crate) fn output_kind(task: &str, output: &ReturnType) -> syn::Result<Output> {
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
