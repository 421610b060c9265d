//! The `x86_64` crate's frame-allocator traits over any [`Allocator`]: what
//! its page-table mapper asks for. (Over the global allocator,
//! `Frames::global` with the `global` feature.)

use x86_64::structures::paging::{FrameAllocator, FrameDeallocator, PhysFrame, Size4KiB};

use crate::allocator::{Allocator, Hooks};
use crate::types::AllocFlags;

/// The `x86_64` crate's frame allocator over an [`Allocator`]: each frame
/// handed out holds one reference, which `deallocate_frame` drops.
pub struct Frames<'a, H: Hooks> {
    allocator: &'a Allocator<H>,
    flags: AllocFlags,
}

impl<'a, H: Hooks> Frames<'a, H> {
    /// Frames from `allocator`'s pool and zone chosen by `flags`.
    ///
    /// # Safety
    /// The frames it hands out are given back only through
    /// [`FrameDeallocator::deallocate_frame`] (or by whoever they are passed
    /// on to), never released through `allocator` by anyone else:
    /// `FrameAllocator` promises that no frame is handed out twice.
    pub unsafe fn new(allocator: &'a Allocator<H>, flags: AllocFlags) -> Self {
        Frames { allocator, flags }
    }
}

// SAFETY: every frame returned was just allocated with one reference owned by
// the caller, and `Frames::new`'s contract keeps anyone else from releasing
// it, so no frame is handed out twice while in use.
unsafe impl<H: Hooks> FrameAllocator<Size4KiB> for Frames<'_, H> {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        let pa = self.allocator.alloc(1, 1, self.flags).ok()?;
        Some(PhysFrame::containing_address(pa))
    }
}

impl<H: Hooks> FrameDeallocator<Size4KiB> for Frames<'_, H> {
    /// # Safety
    /// The caller owns a reference to `frame` (from `allocate_frame`) and
    /// no longer uses the frame through it.
    unsafe fn deallocate_frame(&mut self, frame: PhysFrame<Size4KiB>) {
        // Refused only for a frame that holds no reference, which changes
        // nothing and is reported through `on_misuse`.
        let _ = self.allocator.put(frame.start_address());
    }
}
