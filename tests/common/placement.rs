//! A buffer standing for physical memory: where it may lie and what it
//! holds at first, one rule for `tests/common`, `tests/model` (which the
//! fuzz targets include alone) and the crate's unit tests (both with
//! `#[path]`).

use std::alloc::{alloc, Layout};

/// A buffer standing for physical memory `[phys_base, phys_base + bytes)`,
/// holding what RAM holds at boot: whatever was there before (kpalloc must
/// write its metadata before it reads it, and a test must not expect a
/// fresh page to be zero). Under Miri its bytes are uninitialised, so that
/// a read before a write is an error; natively they hold 0xA5, a pattern
/// no one writes by accident. The caller frees it with `layout`, or leaks it.
pub fn boot_ram(phys_base: u64, bytes: u64) -> (*mut u8, Layout) {
    assert!(bytes > 0, "memory of at least a byte");
    let layout = Layout::from_size_align(bytes as usize, buffer_align(phys_base, bytes)).unwrap();
    // SAFETY: a non-zero size, asserted above.
    let buffer = unsafe { alloc(layout) };
    assert!(!buffer.is_null());
    if !cfg!(miri) {
        // SAFETY: the buffer is `bytes` long and ours.
        unsafe { buffer.write_bytes(0xA5, bytes as usize) };
    }
    (buffer, layout)
}

/// The alignment of a buffer standing for physical memory `[phys_base,
/// phys_base + bytes)`. Page alignment on a host, where heap addresses lie
/// far above the physical addresses the tests use. Miri and 32-bit targets
/// hand out low addresses, and a kernel virtual address below its physical
/// address would make `phys_offset` wrap (refused by `add_region`): there
/// the alignment is raised past the physical end, which puts the buffer
/// above it (up to 512 MiB, the largest alignment there is: tests of higher
/// physical memory are skipped there).
fn buffer_align(phys_base: u64, bytes: u64) -> usize {
    const PAGE: u64 = 4096;
    if cfg!(miri) || cfg!(target_pointer_width = "32") {
        (phys_base + bytes).next_power_of_two().clamp(PAGE, 1 << 29) as usize
    } else {
        PAGE as usize
    }
}
