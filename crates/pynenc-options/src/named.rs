//! [`named_choices!`]: an option whose value is one of a few names.

/// Defines an enum whose variants are chosen by name in `#[task(...)]` and
/// in configuration: `ALL`, `EXPECTED` (for error messages), `from_name`
/// (any case, surrounding spaces ignored, aliases accepted), `name` (as
/// written in configuration), `variant_name` (as generated code writes it)
/// and `Display` (the name).
macro_rules! named_choices {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $(
                $(#[$vmeta:meta])*
                $variant:ident = $text:literal $(| $alias:literal)*,
            )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every choice, in declaration order.
            pub const ALL: [$name; named_choices!(@count $($variant)+)] = [$($name::$variant),+];

            /// What a value looks like, for error messages.
            pub const EXPECTED: &'static str = named_choices!(@expected $($text)+);

            /// Parses a name in any case, or one of its aliases.
            pub fn from_name(name: &str) -> Option<Self> {
                match name.trim().to_ascii_lowercase().as_str() {
                    $( $text $(| $alias)* => Some($name::$variant), )+
                    _ => None,
                }
            }

            /// The name as written in configuration.
            pub fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }

            /// The name of the enum variant, as generated code writes it.
            pub fn variant_name(self) -> &'static str {
                match self {
                    $( $name::$variant => stringify!($variant), )+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
    (@count) => { 0 };
    (@count $first:ident $($rest:ident)*) => { 1 + named_choices!(@count $($rest)*) };
    (@expected $first:literal $($rest:literal)*) => {
        concat!("one of ", $first $(, ", ", $rest)*)
    };
}

pub(crate) use named_choices;
