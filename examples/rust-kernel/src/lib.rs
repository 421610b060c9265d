//! The memory set-up of a Rust kernel on kpalloc: a static allocator with
//! per-CPU page caches, the kernel's interrupt and CPU-number hooks, RAM
//! handed over region by region, and page-table frames for the `x86_64`
//! crate's mapper. `no_std`, with the kernel's own panic handler.

#![cfg_attr(not(test), no_std)]

use core::ffi::CStr;

use kpalloc::{AllocFlags, Allocator, Config, CpuCaches, DebugFlags, Frames, Hooks, PageStatus, Pool};
use x86_64::PhysAddr;

/// The kernel's side of the allocator.
pub struct KernelHooks;

impl Hooks for KernelHooks {
    /// Interrupts off around the allocator's lock: an interrupt handler
    /// that allocates then never spins on a lock its own CPU holds.
    fn irq_save(&self) -> u64 {
        let enabled = interrupts::are_enabled();
        interrupts::disable();
        enabled as u64
    }

    fn irq_restore(&self, saved: u64) {
        if saved != 0 {
            interrupts::enable();
        }
    }

    /// One CPU here; an SMP kernel returns its per-CPU number (the local
    /// APIC id, or a number kept in its per-CPU area).
    fn cpu_id(&self) -> usize {
        0
    }

    fn panic(&self, message: &CStr) -> ! {
        panic!("{}", message.to_str().unwrap_or("kpalloc: allocation failed"))
    }
}

/// The interrupt flag: `cli`/`sti` in the kernel. The host test runs in user
/// space, where there are no interrupts to mask and `cli` would fault.
#[cfg(target_os = "none")]
use x86_64::instructions::interrupts;
#[cfg(not(target_os = "none"))]
mod interrupts {
    pub fn are_enabled() -> bool {
        false
    }
    pub fn disable() {}
    pub fn enable() {}
}

static CACHES: CpuCaches = CpuCaches::new();
static MEMORY: spin::Once<Allocator<KernelHooks>> = spin::Once::new();

/// The kernel's page allocator, set up on first use with RAM mapped at
/// `phys_offset` (the direct map).
pub fn memory(phys_offset: u64) -> &'static Allocator<KernelHooks> {
    MEMORY.call_once(|| {
        Allocator::with_cpu_caches(
            Config {
                phys_offset,
                debug: DebugFlags::NONE,
            },
            KernelHooks,
            &CACHES,
        )
    })
}

/// Hands the usable RAM ranges of the boot memory map to the allocator.
///
/// # Safety
/// Each range is RAM that nothing else uses, mapped read-write at its
/// physical address plus the allocator's `phys_offset`, for good.
pub unsafe fn add_ram(allocator: &Allocator<KernelHooks>, ranges: &[(u64, u64)]) -> Result<(), PageStatus> {
    for &(start, end) in ranges {
        // SAFETY: per this function's contract.
        unsafe { allocator.add_region(PhysAddr::new(start), PhysAddr::new(end), Pool::Kernel)? };
    }
    Ok(())
}

/// Zeroed frames for page tables (`x86_64::structures::paging::Mapper`).
pub fn page_table_frames(allocator: &'static Allocator<KernelHooks>) -> Frames<'static, KernelHooks> {
    // SAFETY: the kernel gives these frames back only through
    // `deallocate_frame`, never by address.
    unsafe { Frames::new(allocator, AllocFlags::ZERO) }
}

#[cfg(all(target_os = "none", not(test)))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    interrupts::disable();
    loop {
        x86_64::instructions::hlt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::{alloc, Layout};
    use x86_64::structures::paging::{FrameAllocator, FrameDeallocator, PhysFrame, Size4KiB};

    /// Physical address the test's "RAM" starts at.
    const RAM_START: u64 = 0x10_0000;
    const RAM_BYTES: usize = 4 << 20;

    #[test]
    fn the_kernel_gets_page_table_frames_and_aligned_blocks() {
        let layout = Layout::from_size_align(RAM_BYTES, 4096).unwrap();
        // SAFETY: a non-zero size; the buffer is leaked: the allocator keeps
        // it for good, as a kernel's RAM.
        let ram = unsafe { alloc(layout) };
        assert!(!ram.is_null());
        // RAM at boot is not zeroed: a pattern, so that the zeroed frames
        // below are zeroed by the allocator, not by the test.
        // SAFETY: the buffer was just allocated, RAM_BYTES long.
        unsafe { ram.write_bytes(0xA5, RAM_BYTES) };
        let allocator = memory(ram as u64 - RAM_START);
        let end = RAM_START + RAM_BYTES as u64;
        // SAFETY: the buffer is ours alone, mapped at phys_offset.
        unsafe {
            add_ram(
                allocator,
                &[(RAM_START, RAM_START + (1 << 20)), (RAM_START + (1 << 20), end)],
            )
        }
        .unwrap();
        assert_eq!(allocator.stats().regions, 2);

        let mut frames = page_table_frames(allocator);
        let frame: PhysFrame<Size4KiB> = frames.allocate_frame().unwrap();
        let table = (frame.start_address().as_u64() + allocator.config().phys_offset) as *mut u8;
        // SAFETY: the frame was just allocated to us, one page long.
        let bytes = unsafe { std::slice::from_raw_parts_mut(table, 4096) };
        assert!(bytes.iter().all(|&b| b == 0), "page-table frames come zeroed");
        bytes.fill(0xaa);
        // SAFETY: we allocated it and stop using it here.
        unsafe { frames.deallocate_frame(frame) };

        let block = allocator.alloc(16, 16, AllocFlags::NONE).unwrap();
        assert_eq!(block.as_u64() % (16 * 4096), 0, "aligned to its length");
        assert_eq!(allocator.block_pages(block), 16);
        assert_eq!(allocator.free(block), Ok(()));
        assert_eq!(
            allocator.free(block),
            Err(PageStatus::ENOTALLOCATED),
            "a double free is refused"
        );
        assert_eq!(allocator.check(), Ok(()));
    }
}
