//! Page-level units and the C ABI's constants, defined once.

#![deny(unsafe_code)]

/// Size of a page in bytes.
pub const KPALLOC_PAGE_SIZE: usize = 4096;
/// log2 of [`KPALLOC_PAGE_SIZE`].
pub const KPALLOC_PAGE_SHIFT: u32 = 12;

/// Allocation flag: a failed allocation calls the `panic` hook instead of
/// returning NULL.
pub const PAGE_ALLOC_ASSERT: u32 = 1;
/// Allocation flag: the block is filled with zeros (outside the lock).
pub const PAGE_ALLOC_ZERO: u32 = 2;
/// Allocation flag: take the block from the user pool.
pub const PAGE_ALLOC_USER: u32 = 4;
/// Allocation flag: every page of the block lies below 4 GiB physical.
pub const PAGE_ALLOC_DMA32: u32 = 8;

/// Pool of memory for the kernel's own use (the default).
pub const PAGE_POOL_KERNEL: u32 = 0;
/// Pool of memory for user processes (`PAGE_ALLOC_USER`).
pub const PAGE_POOL_USER: u32 = 1;

/// Debug flag (`page_config.debug`): freed pages are filled with 0xAA, and
/// the pattern is checked when they are allocated again; a write after free
/// is reported as `PAGE_ECORRUPT` through `on_misuse` with the page.
pub const PAGE_DEBUG_POISON: u32 = 1;
/// Debug flag (`page_config.debug`): every live block records where it was
/// allocated (`page_alloc_tagged`, Rust `#[track_caller]`), for
/// `page_for_each_live`. Costs 16 bytes of metadata per page, only when on.
pub const PAGE_DEBUG_TRACK: u32 = 2;

/// CPUs with a page cache of their own when `page_config.cpu_id` is set;
/// higher CPU numbers share (number modulo this).
pub const KPALLOC_MAX_CPUS: usize = 16;

/// The largest reference count a block can have; `page_get` beyond it
/// returns `PAGE_EOVERFLOW`.
pub const PAGE_REFCOUNT_MAX: u32 = 0x7FFF_FFFF;

const _: () = assert!(1 << KPALLOC_PAGE_SHIFT == KPALLOC_PAGE_SIZE);

/// A physical page frame number: physical address >> 12.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pfn(pub u64);

impl Pfn {
    /// The frame holding physical address `pa`.
    pub const fn containing(pa: u64) -> Pfn {
        Pfn(pa >> KPALLOC_PAGE_SHIFT)
    }

    /// The frame starting at `pa`, if `pa` is page aligned.
    pub const fn at(pa: u64) -> Option<Pfn> {
        if pa % KPALLOC_PAGE_SIZE as u64 == 0 {
            Some(Pfn(pa >> KPALLOC_PAGE_SHIFT))
        } else {
            None
        }
    }

    /// The physical address of the frame's first byte.
    pub const fn pa(self) -> u64 {
        self.0 << KPALLOC_PAGE_SHIFT
    }

    pub(crate) const fn add(self, pages: u64) -> Pfn {
        Pfn(self.0 + pages)
    }
}

/// Which pool a region belongs to and an allocation draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pool {
    /// `PAGE_POOL_KERNEL`.
    Kernel,
    /// `PAGE_POOL_USER`.
    User,
}

impl Pool {
    /// The pool with this C number (`PAGE_POOL_*`).
    pub const fn from_u32(value: u32) -> Option<Pool> {
        match value {
            PAGE_POOL_KERNEL => Some(Pool::Kernel),
            PAGE_POOL_USER => Some(Pool::User),
            _ => None,
        }
    }
}

/// A `u32` newtype that holds only known flags: `NONE`, one constant per
/// flag, `from_bits` (`None` for an unknown bit), `bits`, `contains`,
/// `intersects` and `|`. One definition for every set of C flag bits.
macro_rules! checked_flags {
    (
        $(#[$doc:meta])*
        $name:ident { $($(#[$flag_doc:meta])* $flag:ident = $bits:expr,)+ }
    ) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
        pub struct $name(u32);

        impl $name {
            /// No flags.
            pub const NONE: $name = $name(0);
            $($(#[$flag_doc])* pub const $flag: $name = $name($bits);)+
            const ALL: u32 = 0 $(| $bits)+;

            /// The flags, or `None` if an unknown bit is set.
            pub const fn from_bits(bits: u32) -> Option<$name> {
                if bits & !Self::ALL == 0 {
                    Some($name(bits))
                } else {
                    None
                }
            }

            /// The C bits.
            pub const fn bits(self) -> u32 {
                self.0
            }

            /// Whether every flag of `other` is set.
            pub const fn contains(self, other: $name) -> bool {
                self.0 & other.0 == other.0
            }

            /// Whether any flag of `other` is set.
            pub const fn intersects(self, other: $name) -> bool {
                self.0 & other.0 != 0
            }
        }

        impl core::ops::BitOr for $name {
            type Output = $name;
            fn bitor(self, rhs: $name) -> $name {
                $name(self.0 | rhs.0)
            }
        }
    };
}

checked_flags! {
    /// A checked set of `PAGE_ALLOC_*` flags (none: kernel pool, contents
    /// left as they are).
    AllocFlags {
        /// [`PAGE_ALLOC_ASSERT`].
        ASSERT = PAGE_ALLOC_ASSERT,
        /// [`PAGE_ALLOC_ZERO`].
        ZERO = PAGE_ALLOC_ZERO,
        /// [`PAGE_ALLOC_USER`].
        USER = PAGE_ALLOC_USER,
        /// [`PAGE_ALLOC_DMA32`].
        DMA32 = PAGE_ALLOC_DMA32,
    }
}

impl AllocFlags {
    /// The pool these flags draw from.
    pub const fn pool(self) -> Pool {
        if self.contains(Self::USER) {
            Pool::User
        } else {
            Pool::Kernel
        }
    }
}

checked_flags! {
    /// A checked set of `PAGE_DEBUG_*` flags, for [`crate::allocator::Config`].
    DebugFlags {
        /// [`PAGE_DEBUG_POISON`].
        POISON = PAGE_DEBUG_POISON,
        /// [`PAGE_DEBUG_TRACK`].
        TRACK = PAGE_DEBUG_TRACK,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_flags_hold_only_the_flags_they_know() {
        assert_eq!(DebugFlags::from_bits(0), Some(DebugFlags::NONE));
        assert_eq!(
            DebugFlags::from_bits(PAGE_DEBUG_POISON | PAGE_DEBUG_TRACK),
            Some(DebugFlags::POISON | DebugFlags::TRACK)
        );
        for unknown in [4, 1 << 31, u32::MAX] {
            assert_eq!(DebugFlags::from_bits(unknown), None, "{unknown:#x}");
        }
        assert_eq!(AllocFlags::from_bits(16), None);

        let both = DebugFlags::POISON | DebugFlags::TRACK;
        assert_eq!(both.bits(), PAGE_DEBUG_POISON | PAGE_DEBUG_TRACK);
        assert!(both.contains(DebugFlags::TRACK) && !DebugFlags::TRACK.contains(both));
        assert!(DebugFlags::TRACK.intersects(both) && !DebugFlags::TRACK.intersects(DebugFlags::POISON));
        assert!(!DebugFlags::NONE.intersects(both) && both.contains(DebugFlags::NONE));
        assert_eq!((AllocFlags::ZERO | AllocFlags::USER).pool(), Pool::User);
    }
}
