//! Address newtypes: guest-physical ([`Pa`]), guest-virtual ([`Va`]) and guest frame
//! numbers ([`Gfn`]).
//!
//! They keep the two address spaces apart in signatures: a function that takes a `Va`
//! cannot be handed a physical address by mistake. Arithmetic is explicit and checked
//! where guest data can make it overflow.

use std::fmt;

/// Bytes in a base page.
pub const PAGE_SIZE: u64 = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;

macro_rules! address {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub u64);

        impl $name {
            /// The address as a number.
            pub const fn get(self) -> u64 {
                self.0
            }

            /// `self + off`, or `None` when it passes 2^64.
            pub const fn checked_add(self, off: u64) -> Option<$name> {
                match self.0.checked_add(off) {
                    Some(v) => Some($name(v)),
                    None => None,
                }
            }

            /// `self + off`, wrapping at 2^64.
            pub const fn wrapping_add(self, off: u64) -> $name {
                $name(self.0.wrapping_add(off))
            }

            /// The offset within the 4 KiB page.
            pub const fn page_offset(self) -> u64 {
                self.0 & (PAGE_SIZE - 1)
            }

            /// The address rounded down to its 4 KiB page.
            pub const fn page_base(self) -> $name {
                $name(self.0 & !(PAGE_SIZE - 1))
            }

            /// Bytes from `self` to the end of its 4 KiB page (1..=4096).
            pub const fn to_page_end(self) -> u64 {
                PAGE_SIZE - self.page_offset()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:#x})"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }

        impl fmt::LowerHex for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::LowerHex::fmt(&self.0, f)
            }
        }

        impl From<$name> for u64 {
            fn from(a: $name) -> u64 {
                a.0
            }
        }
    };
}

address!(
    /// A guest-physical address.
    Pa
);
address!(
    /// A guest-virtual address.
    Va
);

impl Pa {
    /// The frame that holds this address.
    pub const fn gfn(self) -> Gfn {
        Gfn(self.0 >> PAGE_SHIFT)
    }
}

/// A guest frame number: a guest-physical address divided by [`PAGE_SIZE`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Gfn(pub u64);

impl Gfn {
    /// The first physical address of the frame (wraps for frame numbers ≥ 2^52, which
    /// no x86-64 machine has).
    pub const fn pa(self) -> Pa {
        Pa(self.0 << PAGE_SHIFT)
    }
}

impl fmt::Debug for Gfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Gfn({:#x})", self.0)
    }
}

impl fmt::Display for Gfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gfn {:#x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_helpers() {
        let pa = Pa(0x1234_5678);
        assert_eq!(pa.page_offset(), 0x678);
        assert_eq!(pa.page_base(), Pa(0x1234_5000));
        assert_eq!(pa.to_page_end(), 0x1000 - 0x678);
        assert_eq!(Pa(0x2000).to_page_end(), 0x1000);
        assert_eq!(pa.gfn(), Gfn(0x12345));
        assert_eq!(pa.gfn().pa(), Pa(0x1234_5000));
        assert_eq!(Va(u64::MAX).checked_add(1), None);
        assert_eq!(Va(u64::MAX).wrapping_add(2), Va(1));
        assert_eq!(format!("{} {:?}", Va(0x10), Pa(0x20)), "0x10 Pa(0x20)");
    }
}
