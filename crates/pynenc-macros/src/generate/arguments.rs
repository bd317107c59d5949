//! The task's `Params` struct and the forms a call's arguments may take:
//! `IntoArguments` for `Params`, the tuple of the parameters, the bare
//! value of a one-parameter task, or `()`.

use proc_macro2::TokenStream as TokenStream2;
use quote::quote;

use super::names::last_segment;
use crate::function::TaskFn;

/// The `IntoArguments` implementations of the task's module.
pub(crate) fn into_arguments(task: &TaskFn) -> TokenStream2 {
    let tys: Vec<_> = task.params.iter().map(|p| &p.ty).collect();
    let idents: Vec<_> = task.params.iter().map(|p| &p.ident).collect();
    if task.params.is_empty() {
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
            let (ident, name) = (&p.ident, &p.name);
            quote! {
                ::pynenc::task::ArgValue::insert_into(
                    &self.#ident,
                    &mut __pynenc_arguments,
                    serializer,
                    #name,
                )?;
            }
        });
        let count = task.params.len();
        let indices = (0..count).map(syn::Index::from);
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
                    let mut __pynenc_arguments = ::pynenc::Arguments::with_capacity(#count);
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
    }
}
