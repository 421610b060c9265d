//! Memory that stands for physical memory in tests: a leaked, page-aligned
//! buffer whose first byte is physical address `phys_base`.
#![allow(dead_code)]

use kpalloc::{Allocator, Config, DebugFlags, NoHooks, Pool};
use x86_64::PhysAddr;

pub const PAGE: u64 = 4096;

mod placement;
pub use placement::boot_ram;

pub struct TestMemory {
    pub phys_base: u64,
    pub bytes: u64,
    pub phys_offset: u64,
}

impl TestMemory {
    /// `pages` pages standing for physical memory from `phys_base`.
    pub fn new(phys_base: u64, pages: u64) -> Self {
        let bytes = pages * PAGE;
        // Leaked: regions belong to their allocator for the rest of the program.
        let (buffer, _) = boot_ram(phys_base, bytes);
        let addr = buffer.expose_provenance() as u64;
        TestMemory {
            phys_base,
            bytes,
            phys_offset: addr.wrapping_sub(phys_base),
        }
    }

    pub fn allocator(&self) -> Allocator<NoHooks> {
        self.allocator_with_debug(DebugFlags::NONE)
    }

    pub fn allocator_with_debug(&self, debug: DebugFlags) -> Allocator<NoHooks> {
        Allocator::new(
            Config {
                phys_offset: self.phys_offset,
                debug,
            },
            NoHooks,
        )
    }

    /// The bytes at physical address `pa`, as a kernel bug would see them.
    ///
    /// # Safety
    /// The range is inside this memory, and nothing else reads or writes
    /// it while the slice lives.
    pub unsafe fn bytes(&self, pa: PhysAddr, len: usize) -> &'static mut [u8] {
        let kva = pa.as_u64().wrapping_add(self.phys_offset) as usize;
        // SAFETY: per this function's contract.
        unsafe { std::slice::from_raw_parts_mut(std::ptr::with_exposed_provenance_mut(kva), len) }
    }

    pub fn pa(&self, offset_pages: u64) -> PhysAddr {
        PhysAddr::new(self.phys_base + offset_pages * PAGE)
    }

    /// Adds pages `[from, to)` of this memory as a region.
    pub fn add(
        &self,
        allocator: &Allocator<impl kpalloc::Hooks>,
        from: u64,
        to: u64,
        pool: Pool,
    ) -> Result<(), kpalloc::PageStatus> {
        assert!(to * PAGE <= self.bytes);
        // SAFETY: the range is inside this leaked buffer, and each test adds
        // a page of it to at most one region.
        unsafe { allocator.add_region(self.pa(from), self.pa(to), pool) }
    }
}
