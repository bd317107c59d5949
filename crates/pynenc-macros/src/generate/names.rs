//! Names in generated code that must not clash with the user's.

use std::collections::HashSet;

use proc_macro2::{Span, TokenStream as TokenStream2, TokenTree};
use syn::ext::IdentExt;
use syn::{Ident, Type};

use crate::function::strip_type;

/// Every identifier in some tokens.
pub(crate) fn collect_idents(tokens: TokenStream2, out: &mut HashSet<String>) {
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
pub(crate) fn fresh_ident(base: &str, used: &HashSet<String>) -> Ident {
    let mut name = base.to_string();
    while used.contains(&name) {
        name.push('_');
    }
    Ident::new(&name, Span::call_site())
}

/// The last path segment of a type, if it is a path.
pub(crate) fn last_segment(ty: &Type) -> Option<String> {
    match strip_type(ty) {
        Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
        _ => None,
    }
}
