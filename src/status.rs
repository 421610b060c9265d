//! The one status type shared by the Rust API and the C ABI.

#![deny(unsafe_code)]

use core::ffi::CStr;

/// The result of every kpalloc call: `PAGE_OK`, or why nothing was done.
///
/// The numbers are part of the C ABI and never change. Every status other
/// than `PAGE_OK` means that the allocator's state is exactly as it was
/// before the call (only the `failed_allocs` and `misuse_reports` counters
/// move, and a scheduled failure counts the attempt; and with per-CPU
/// caches, a refused allocation may first have
/// emptied them into the bitmaps, which changes `cached_pages` and
/// `largest_free_run` but no page's state).
///
/// cbindgen:rename-all=prefix:PAGE_
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(clippy::upper_case_acronyms)]
pub enum PageStatus {
    /// Success.
    OK = 0,
    /// Not enough free memory of the requested kind (exhaustion, not misuse).
    ENOMEM = 1,
    /// An argument is invalid: zero count, bad alignment, unknown flags or
    /// pool, empty or reversed range, NULL out-pointer; also an unaligned
    /// `page_alloc_at` address, a length `page_free_sized` finds wrong, a
    /// pool/DMA32 mismatch, `page_fail_every(0)`, and a region without
    /// kernel virtual addresses.
    EINVAL = 2,
    /// The address (of a block to free, get, put or split, or a range to
    /// reserve) is NULL, not page aligned, outside every region, or one of
    /// a region's metadata pages.
    ENOTMANAGED = 3,
    /// The page is free: double free, or get/put on a page never allocated.
    ENOTALLOCATED = 4,
    /// The page is an interior page of a block; only its head page names it.
    ENOTHEAD = 5,
    /// The block has more than one reference; `page_put` it instead.
    ESHARED = 6,
    /// The reference count is at `PAGE_REFCOUNT_MAX` and cannot grow.
    EOVERFLOW = 7,
    /// The new region overlaps a region already added.
    EOVERLAP = 8,
    /// The region is too small for its metadata plus one usable page.
    ETOOSMALL = 9,
    /// `page_init` has not been called yet.
    EUNINIT = 10,
    /// Already initialised, or a page of the requested range is in use, or
    /// (`page_check`) a CPU's page cache stayed in use during the check.
    EBUSY = 11,
    /// A self-check found the allocator's state inconsistent.
    ECORRUPT = 12,
}

impl PageStatus {
    /// The C name of the status, e.g. `"PAGE_ENOMEM"`.
    pub const fn name(self) -> &'static CStr {
        match self {
            Self::OK => c"PAGE_OK",
            Self::ENOMEM => c"PAGE_ENOMEM",
            Self::EINVAL => c"PAGE_EINVAL",
            Self::ENOTMANAGED => c"PAGE_ENOTMANAGED",
            Self::ENOTALLOCATED => c"PAGE_ENOTALLOCATED",
            Self::ENOTHEAD => c"PAGE_ENOTHEAD",
            Self::ESHARED => c"PAGE_ESHARED",
            Self::EOVERFLOW => c"PAGE_EOVERFLOW",
            Self::EOVERLAP => c"PAGE_EOVERLAP",
            Self::ETOOSMALL => c"PAGE_ETOOSMALL",
            Self::EUNINIT => c"PAGE_EUNINIT",
            Self::EBUSY => c"PAGE_EBUSY",
            Self::ECORRUPT => c"PAGE_ECORRUPT",
        }
    }

    /// The status with this number, if there is one.
    pub const fn from_u32(value: u32) -> Option<Self> {
        const ALL: [PageStatus; 13] = [
            PageStatus::OK,
            PageStatus::ENOMEM,
            PageStatus::EINVAL,
            PageStatus::ENOTMANAGED,
            PageStatus::ENOTALLOCATED,
            PageStatus::ENOTHEAD,
            PageStatus::ESHARED,
            PageStatus::EOVERFLOW,
            PageStatus::EOVERLAP,
            PageStatus::ETOOSMALL,
            PageStatus::EUNINIT,
            PageStatus::EBUSY,
            PageStatus::ECORRUPT,
        ];
        if (value as usize) < ALL.len() {
            Some(ALL[value as usize])
        } else {
            None
        }
    }

    /// Whether a call refused with this status was the caller's mistake
    /// (reported through `on_misuse`) rather than a lack of free memory.
    pub(crate) const fn is_misuse(self) -> bool {
        !matches!(self, Self::OK | Self::ENOMEM)
    }

    /// `Ok(())` for `PAGE_OK`, `Err(self)` otherwise.
    pub const fn into_result(self) -> Result<(), PageStatus> {
        match self {
            Self::OK => Ok(()),
            other => Err(other),
        }
    }
}

impl From<Result<(), PageStatus>> for PageStatus {
    fn from(result: Result<(), PageStatus>) -> Self {
        match result {
            Ok(()) => Self::OK,
            Err(status) => status,
        }
    }
}

impl core::fmt::Display for PageStatus {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name().to_str().unwrap_or("PAGE_?"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_number_round_trips_and_has_its_c_name() {
        for n in 0..13 {
            let status = PageStatus::from_u32(n).unwrap();
            assert_eq!(status as u32, n);
            assert!(status.name().to_str().unwrap().starts_with("PAGE_E") || n == 0);
        }
        assert_eq!(PageStatus::from_u32(13), None);
        assert_eq!(PageStatus::ENOTHEAD.name(), c"PAGE_ENOTHEAD");
    }
}
