//! Where a buffer standing for physical memory may lie: one rule for
//! `tests/common` and `tests/model` (which the fuzz targets include alone,
//! with `#[path]`).

/// The alignment of a buffer standing for physical memory `[phys_base,
/// phys_base + bytes)`. Page alignment on a host, where heap addresses lie
/// far above the physical addresses the tests use. Miri and 32-bit targets
/// hand out low addresses, and a kernel virtual address below its physical
/// address would make `phys_offset` wrap (refused by `add_region`): there
/// the alignment is raised past the physical end, which puts the buffer
/// above it (up to 512 MiB, the largest alignment there is: tests of higher
/// physical memory are skipped there).
pub fn buffer_align(phys_base: u64, bytes: u64) -> usize {
    const PAGE: u64 = 4096;
    if cfg!(miri) || cfg!(target_pointer_width = "32") {
        (phys_base + bytes).next_power_of_two().clamp(PAGE, 1 << 29) as usize
    } else {
        PAGE as usize
    }
}
