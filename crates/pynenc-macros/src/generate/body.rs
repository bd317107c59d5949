//! The task's body: decode each argument, call the function, serialize
//! its result or error.

use proc_macro2::TokenStream as TokenStream2;
use quote::{quote, quote_spanned};
use syn::Ident;

use crate::function::{Output, TaskFn};

/// The body functions (`__pynenc_run`, or `__pynenc_run_sync`) and the
/// `TaskBody` value that names them.
pub(crate) fn body(fn_ident: &Ident, task: &TaskFn) -> (TokenStream2, TokenStream2) {
    let idents = task.params.iter().map(|p| &p.ident);
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
    let result = task.output.result_type();
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
    if task.is_async {
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
    }
}
