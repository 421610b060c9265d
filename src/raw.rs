//! The raw-memory edge: it carves a region's metadata out of the region's
//! first pages, fills pages, views a block's bytes, and stops the machine
//! when there is nothing else to do. Elsewhere, only the C ABI turns
//! addresses into the pointers it hands back (`src/ffi.rs`), and a tag
//! reads its static text (`src/tag.rs`).

use core::mem::size_of;
use core::ptr;
use core::slice;
use core::sync::atomic::AtomicU32;

use crate::freemap::FreeMap;
use crate::region::{Region, RegionLayout, RegionState, RegionTable};
use crate::sync::LockedBy;
use crate::tag::Tag;
use crate::types::{Pfn, Pool};

#[inline]
fn pointer<T>(kva: usize) -> *mut T {
    ptr::with_exposed_provenance_mut(kva)
}

/// Writes a new region's metadata at `kva`, all its pages used, and returns
/// it with a table of `old`'s regions plus the new one, sorted by address,
/// to be published.
///
/// The metadata is written in full before anything refers to it; only the
/// metadata bytes are touched, never the usable pages.
///
/// # Safety
/// The `layout.meta_bytes` bytes from `kva` must be valid for reads and
/// writes, aligned to a page, and used by nothing else for the rest of the
/// program. The regions of `old` must not overlap the new one.
pub(crate) unsafe fn install_region(
    kva: usize,
    layout: &RegionLayout,
    pool: Pool,
    owner_id: u64,
    old: &[&'static Region],
) -> (&'static Region, &'static RegionTable) {
    // Each piece below lies inside the metadata bytes the caller handed over,
    // at an offset RegionLayout aligned for its type, and no two overlap: each
    // `&'static` made here is the only reference to its bytes.
    // SAFETY: the bitmap's piece, as above; zero is a valid u64.
    let words: &'static mut [u64] = unsafe { zeroed(kva + layout.words_at, layout.words) };
    // SAFETY: the summaries' piece, as above.
    let summary: &'static mut [u64] = unsafe { zeroed(kva + layout.summary_at, layout.summary_words) };
    // SAFETY: the slots' piece, as above.
    let slots: &'static mut [u32] = unsafe { zeroed(kva + layout.slots_at, layout.slots()) };
    // SAFETY: the tags' piece (empty without tracking); a zero Tag is Tag::NONE.
    let tags: &'static mut [Tag] = unsafe { zeroed(kva + layout.tags_at, layout.tags) };
    // SAFETY: AtomicU32 has the size, alignment and bit validity of u32.
    let slots: &'static [AtomicU32] = unsafe { slice::from_raw_parts(slots.as_mut_ptr().cast(), slots.len()) };

    // Every page starts used; the caller frees the usable ones.
    let map = FreeMap::new(words, summary, layout.base.0 / 64);
    let region = Region {
        start: layout.start,
        usable: layout.usable,
        end: layout.end,
        base: layout.base,
        pool,
        slots,
        state: LockedBy::new(
            owner_id,
            RegionState {
                map,
                free_pages: 0,
                run_bound: 0,
                tags,
            },
        ),
    };
    // SAFETY: the header's piece, at the region's first (page-aligned) byte.
    let region: &'static Region = unsafe { place(kva, region) };

    let entries: *mut &'static Region = pointer(kva + layout.table_entries_at);
    let starts: *mut Pfn = pointer(kva + layout.table_starts_at);
    let position = old.partition_point(|r| r.start < region.start);
    let sorted = old[..position].iter().chain([&region]).chain(&old[position..]);
    debug_assert_eq!(old.len() + 1, layout.table_len);
    for (i, entry) in sorted.enumerate() {
        // SAFETY: the table's two pieces hold `table_len` entries each,
        // i < table_len.
        unsafe {
            entries.add(i).write(*entry);
            starts.add(i).write(entry.start);
        }
    }
    // SAFETY: all `table_len` entries of both were written just above.
    let (regions, starts) = unsafe {
        (
            slice::from_raw_parts(entries, layout.table_len),
            slice::from_raw_parts(starts, layout.table_len),
        )
    };
    // SAFETY: the table header's piece, as above.
    let table = unsafe { place(kva + layout.table_at, RegionTable::unfilled(regions, starts)) };
    table.fill_first_starts();
    (region, table)
}

/// # Safety
/// `len` values of `T` from `kva` must be valid for writes, aligned, owned
/// by the caller for the rest of the program, and all-zero must be a valid `T`.
unsafe fn zeroed<T>(kva: usize, len: usize) -> &'static mut [T] {
    let start = pointer::<T>(kva);
    // SAFETY: per this function's contract.
    unsafe {
        ptr::write_bytes(start, 0, len);
        slice::from_raw_parts_mut(start, len)
    }
}

/// # Safety
/// `size_of::<T>()` bytes at `kva` must be valid for writes, aligned for
/// `T`, and owned by the caller for the rest of the program.
unsafe fn place<T>(kva: usize, value: T) -> &'static mut T {
    let at = pointer::<T>(kva);
    // SAFETY: per this function's contract.
    unsafe {
        at.write(value);
        &mut *at
    }
}

/// Fills `bytes` bytes at `kva` with `byte`.
///
/// # Safety
/// The bytes must be valid for writes and not referenced by anyone else
/// during the call (an allocated block that its owner has not touched yet).
pub(crate) unsafe fn fill(kva: usize, bytes: usize, byte: u8) {
    // SAFETY: per this function's contract.
    unsafe { ptr::write_bytes(pointer::<u8>(kva), byte, bytes) }
}

/// The bytes of an allocated block.
///
/// # Safety
/// The `bytes` bytes at `kva` must be valid memory of a block the caller
/// holds a reference to, not written through another path while the slice
/// lives.
pub(crate) unsafe fn block_bytes<'a>(kva: usize, bytes: usize) -> &'a [u8] {
    // SAFETY: per this function's contract.
    unsafe { slice::from_raw_parts(pointer::<u8>(kva), bytes) }
}

/// Mutable bytes of an allocated block.
///
/// # Safety
/// As [`block_bytes`], and no other reference to the bytes may exist while
/// the slice lives.
#[cfg(feature = "global")]
pub(crate) unsafe fn block_bytes_mut<'a>(kva: usize, bytes: usize) -> &'a mut [u8] {
    // SAFETY: per this function's contract.
    unsafe { slice::from_raw_parts_mut(pointer::<u8>(kva), bytes) }
}

/// Stops for good when no panic hook is set (or it returned).
pub(crate) fn halt() -> ! {
    #[cfg(feature = "std")]
    {
        extern crate std;
        std::process::abort()
    }
    #[cfg(all(not(feature = "std"), target_os = "none"))]
    loop {
        // SAFETY: masking interrupts and halting only stops this CPU; in a
        // kernel that is the last thing left to do.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) }
    }
    #[cfg(all(not(feature = "std"), not(target_os = "none")))]
    // SAFETY: `ud2` raises an invalid-opcode fault: the process is killed
    // (SIGILL) without running anything else.
    unsafe {
        core::arch::asm!("ud2", options(noreturn, nomem, nostack))
    }
}

const _: () = assert!(size_of::<AtomicU32>() == size_of::<u32>());
