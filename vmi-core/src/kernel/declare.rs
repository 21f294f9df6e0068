//! The one declaration of the kernel fields and symbols an object reader uses.
//!
//! [`kernel_layout!`](crate::kernel_layout) declares a layout struct whose fields are
//! kernel offsets, each with its type, aliases and presence, and generates from that one
//! list the struct, its `from_profile` and its `NEEDS`
//! ([`Declaration`](crate::profile::needs::Declaration)); [`declaration!`](crate::declaration)
//! declares fields and symbols read by code without a layout struct.
//! [`crate::profile::needs`] is the union of every declaration.
//!
//! ```text
//! kernel_layout! {
//!     /// Offsets into `struct cred`.
//!     pub struct CredLayout(p) {
//!         /// `cred.uid`
//!         pub uid: u64 = "cred" ["uid"],
//!         /// `ftrace_ops.direct_call` (6.3 on)
//!         pub direct_call: Option<u64> = opt "ftrace_ops" ["direct_call"],
//!     }
//!     computed {
//!         /// Worked out from the fields above (they are in scope) and `p`.
//!         pub span: u64 = uid + 4,
//!     }
//!     check { /* statements run before the struct is returned: may `return Err(..)` */ }
//!     also [ "cred" ["usage"] ]          // declared, read by explicit code or elsewhere
//!     symbols [ ["init_cred"], opt ["x64_sys_call"] ]
//!     enums [ "bpf_prog_type" ]          // enums whose values the reader takes from the
//!                                        // profile when it has them
//! }
//! ```
//!
//! A field's presence: no keyword, every supported kernel has it (a profile lacking it
//! lists it as missing); `opt`, some kernels lack it under every alias; `opt_type`, its
//! type is one some kernels (or some profiles: a type private to a `.c` file is not in
//! one built from headers) lack entirely; `opt_both`, both. A field read as `u64` makes
//! `from_profile` fail with [`KernelError::MissingField`] naming it; read as
//! `Option<u64>` it is `None`.

use crate::kernel::KernelError;

/// How a looked-up offset becomes a layout field: `u64` requires it, `Option<u64>` takes
/// its absence as `None`.
pub trait Lookup: Sized {
    /// Convert the result of one lookup.
    fn lookup(found: Result<u64, KernelError>) -> Result<Self, KernelError>;
}

impl Lookup for u64 {
    fn lookup(found: Result<u64, KernelError>) -> Result<u64, KernelError> {
        found
    }
}

impl Lookup for Option<u64> {
    fn lookup(found: Result<u64, KernelError>) -> Result<Option<u64>, KernelError> {
        Ok(found.ok())
    }
}

/// A [`Declaration`](crate::profile::needs::Declaration) from lists of fields and
/// symbols: `declaration!("name"; fields [..]; symbols [..])` (see the module docs for
/// the entries).
#[macro_export]
macro_rules! declaration {
    (
        $name:expr $(, resolve $resolve:expr)?;
        fields [ $( $($o:ident)? $ty:literal [ $($a:literal),+ $(,)? ] ),* $(,)? ];
        symbols [ $( $($so:ident)? [ $($sa:literal),+ $(,)? ] ),* $(,)? ]
        $(; enums [ $($en:literal),* $(,)? ])?
    ) => {
        $crate::profile::needs::Declaration {
            name: $name,
            fields: &[ $(
                $crate::profile::needs::DeclaredField {
                    ty: $ty,
                    field: $crate::profile::needs::NeededField {
                        aliases: &[$($a),+],
                        optional: $crate::declaration!(@optional $($o)?),
                    },
                    optional_type: $crate::declaration!(@optional_type $($o)?),
                }
            ),* ],
            symbols: &[ $(
                $crate::profile::needs::NeededSymbol {
                    aliases: &[$($sa),+],
                    optional: $crate::declaration!(@optional $($so)?),
                }
            ),* ],
            enums: &[ $($($en),*)? ],
            resolve: $crate::declaration!(@resolve $($resolve)?),
        }
    };
    (@resolve) => { None };
    (@resolve $r:expr) => { Some($r) };
    (@optional) => { false };
    (@optional opt) => { true };
    (@optional opt_type) => { false };
    (@optional opt_both) => { true };
    (@optional_type) => { false };
    (@optional_type opt) => { false };
    (@optional_type opt_type) => { true };
    (@optional_type opt_both) => { true };
}

/// A layout struct, its `from_profile` and its `NEEDS`, from one list of kernel fields
/// (see [`crate::kernel::declare`]).
#[macro_export]
macro_rules! kernel_layout {
    (
        $(#[$sm:meta])*
        $sv:vis struct $s:ident ($p:ident) {
            $(
                $(#[$fm:meta])*
                $fv:vis $f:ident : $fty:ty = $($o:ident)? $ty:literal [ $($a:literal),+ $(,)? ]
            ),* $(,)?
        }
        $( computed {
            $( $(#[$cm:meta])* $cv:vis $c:ident : $cty:ty = $ce:expr ),* $(,)?
        } )?
        $( check $check:block )?
        $( also [ $($also:tt)* ] )?
        $( symbols [ $($sym:tt)* ] )?
        $( enums [ $($enums:tt)* ] )?
    ) => {
        $(#[$sm])*
        $sv struct $s {
            $( $(#[$fm])* $fv $f: $fty, )*
            $($( $(#[$cm])* $cv $c: $cty, )*)?
        }

        impl $s {
            /// The kernel fields and symbols this layout reads, for
            /// [`crate::profile::needs`].
            pub const NEEDS: $crate::profile::needs::Declaration = $crate::declaration!(
                stringify!($s), resolve |p| $s::from_profile(p).map(|_| ());
                fields [ $( $($o)? $ty [$($a),+] , )* $($($also)*)? ];
                symbols [ $($($sym)*)? ];
                enums [ $($($enums)*)? ]
            );

            /// Resolve every offset from a profile, each field under its aliases.
            pub fn from_profile(
                $p: &$crate::profile::Profile,
            ) -> ::std::result::Result<$s, $crate::kernel::KernelError> {
                $(
                    let $f: $fty = $crate::kernel::declare::Lookup::lookup(
                        $crate::kernel::layout::field($p, $ty, &[$($a),+]),
                    )?;
                )*
                $($( let $c: $cty = $ce; )*)?
                $( $check )?
                Ok($s { $($f,)* $($($c,)*)? })
            }
        }
    };
}
