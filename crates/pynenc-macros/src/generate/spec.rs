//! The `TaskOptionsSpec` of the options written in `#[task(...)]`.

use proc_macro2::{Literal, Span, TokenStream as TokenStream2};
use quote::quote;
use syn::Ident;

use crate::options::{TaskOptions, Value};

/// The tokens of one option value, as a field of `TaskOptionsSpec`.
fn value_tokens(value: &Value) -> TokenStream2 {
    match value {
        Value::Count(n) => {
            let n = Literal::u32_unsuffixed(*n);
            quote!(#n)
        }
        Value::BatchSize(n) => {
            let n = Literal::u64_unsuffixed(*n);
            quote!(#n)
        }
        Value::Flag(b) => quote!(#b),
        Value::List(items) => quote!(&[#(#items),*]),
        Value::Concurrency(c) => {
            let variant = Ident::new(c.variant_name(), Span::call_site());
            quote!(::pynenc::task::ConcurrencyControl::#variant)
        }
        Value::Scope(scope) => {
            let variant = Ident::new(scope.variant_name(), Span::call_site());
            quote!(::pynenc::model::options::RegistrationScopeName::#variant)
        }
        Value::Seconds(n) => {
            let n = Literal::u32_unsuffixed(*n);
            quote!(#n)
        }
    }
}

/// The `TaskOptionsSpec` expression of the options: each written option
/// sets the field of its name, the rest are pynenc's defaults.
pub(crate) fn options_tokens(options: &TaskOptions) -> TokenStream2 {
    if options.values.is_empty() {
        return quote!(::pynenc::task::TaskOptionsSpec::DEFAULT);
    }
    // in the order of the vocabulary, whatever the order written
    let fields = pynenc_options::OPTIONS.iter().filter_map(|def| {
        let value = options.get(def.name)?;
        let field = Ident::new(def.name, Span::call_site());
        let value = value_tokens(value);
        Some(quote!(#field: #value))
    });
    quote! {
        ::pynenc::task::TaskOptionsSpec {
            #(#fields,)*
            ..::pynenc::task::TaskOptionsSpec::DEFAULT
        }
    }
}
