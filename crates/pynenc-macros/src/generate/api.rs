//! The typed API of the task's module: `task()`, `args`, `call`,
//! `call_on`, `direct`, `parallelize` and `parallelize_on`.

use std::collections::HashSet;

use proc_macro2::TokenStream as TokenStream2;
use quote::{format_ident, quote, ToTokens};

use super::names::{collect_idents, fresh_ident};
use crate::function::TaskFn;

/// The functions of the task's module.
pub(crate) fn api(task: &TaskFn) -> TokenStream2 {
    let idents: Vec<_> = task.params.iter().map(|p| &p.ident).collect();
    let tys: Vec<_> = task.params.iter().map(|p| &p.ty).collect();
    let result = task.output.result_type();

    // Names of the generated API that must not clash with the user's.
    let mut used = HashSet::new();
    collect_idents(result.clone(), &mut used);
    for ty in &tys {
        collect_idents(ty.to_token_stream(), &mut used);
    }
    let arg_generic = fresh_ident("A", &used);
    let items_generic = fresh_ident("I", &used);
    let app = if task.params.iter().any(|p| p.name == "app") {
        format_ident!("__pynenc_app")
    } else {
        format_ident!("app")
    };
    let params_value = quote!(Params { #(#idents),* });

    quote! {
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
