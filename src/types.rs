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
/// All debug flags this version knows.
#[cfg(feature = "global")]
pub(crate) const PAGE_DEBUG_ALL: u32 = PAGE_DEBUG_POISON | PAGE_DEBUG_TRACK;

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

/// A checked set of `PAGE_ALLOC_*` flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct AllocFlags(u32);

impl AllocFlags {
    /// No flags: kernel pool, contents left as they are.
    pub const NONE: AllocFlags = AllocFlags(0);
    /// [`PAGE_ALLOC_ASSERT`].
    pub const ASSERT: AllocFlags = AllocFlags(PAGE_ALLOC_ASSERT);
    /// [`PAGE_ALLOC_ZERO`].
    pub const ZERO: AllocFlags = AllocFlags(PAGE_ALLOC_ZERO);
    /// [`PAGE_ALLOC_USER`].
    pub const USER: AllocFlags = AllocFlags(PAGE_ALLOC_USER);
    /// [`PAGE_ALLOC_DMA32`].
    pub const DMA32: AllocFlags = AllocFlags(PAGE_ALLOC_DMA32);
    const ALL: u32 = PAGE_ALLOC_ASSERT | PAGE_ALLOC_ZERO | PAGE_ALLOC_USER | PAGE_ALLOC_DMA32;

    /// The flags, or `None` if an unknown bit is set.
    pub const fn from_bits(bits: u32) -> Option<AllocFlags> {
        if bits & !Self::ALL == 0 {
            Some(AllocFlags(bits))
        } else {
            None
        }
    }

    /// The `PAGE_ALLOC_*` bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: AllocFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The pool these flags draw from.
    pub const fn pool(self) -> Pool {
        if self.contains(Self::USER) {
            Pool::User
        } else {
            Pool::Kernel
        }
    }
}

impl core::ops::BitOr for AllocFlags {
    type Output = AllocFlags;
    fn bitor(self, rhs: AllocFlags) -> AllocFlags {
        AllocFlags(self.0 | rhs.0)
    }
}
