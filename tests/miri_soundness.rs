//! The smallest reproduction of the undefined behaviour Miri finds in
//! `add_region` (run it with `scripts/miri.sh --test miri_soundness`).
//!
//! Bug: src/raw.rs `install_region` makes the region's `&[AtomicU32]` slots
//! from `slots.as_ptr()`, a pointer derived from a *shared* reborrow of the
//! `&mut [u32]` (a SharedReadOnly tag under Stacked Borrows). Turning it
//! into a slice of atomics (interior mutability needs SharedReadWrite) and
//! every later atomic store through it (alloc, get, put, split) is UB:
//!   error: Undefined Behavior: trying to retag from <..> for
//!   SharedReadWrite permission .., but that tag only grants
//!   SharedReadOnly permission for this location --> src/raw.rs:45:48
//! Fix: `slots.as_mut_ptr().cast()`. With it, the whole Miri run is clean.
//! Passes on the host; fails under Miri until then (as does every test that
//! adds a region).

mod common;

use common::TestMemory;
use kpalloc::{AllocFlags, Pool};

#[test]
fn a_region_s_slots_are_written_through_atomics_soundly() {
    let memory = TestMemory::new(0x10_0000, 8);
    let allocator = memory.allocator();
    memory.add(&allocator, 0, 8, Pool::Kernel).unwrap();
    let block = allocator.alloc(2, 1, AllocFlags::NONE).unwrap();
    allocator.get(block).unwrap();
    allocator.put(block).unwrap();
    allocator.free(block).unwrap();
    assert!(allocator.check().is_ok());
}
