//! The Rust face over the global allocator (the one `page_init` sets up):
//! RAII blocks whose `Clone` is `page_get` and whose `Drop` is `page_put`,
//! and [`Frames::global`]. (Feature `global`.)
//!
//! A handle's reference is given up by the handle only: every call that
//! releases a block by its address (`page_free`, `page_put`, `page_split`,
//! `page_free_sized`, and `free`/`put`/`split` through [`crate::global`])
//! is `unsafe`, so safe code cannot free a block under a handle and have
//! its memory handed out twice.
//!
//! ```compile_fail,E0133
//! let page = kpalloc::Page::new().unwrap();
//! kpalloc::ffi::page_free(page.kva().as_mut_ptr::<core::ffi::c_void>());
//! ```
//!
//! ```compile_fail,E0133
//! let page = kpalloc::Page::new().unwrap();
//! kpalloc::global().unwrap().free(page.pa());
//! ```

use core::marker::PhantomData;
use core::mem::ManuallyDrop;

use x86_64::{PhysAddr, VirtAddr};

use crate::allocator::Allocator;
use crate::ffi::{installed, CHooks};
use crate::frames::Frames;
use crate::status::PageStatus;
use crate::types::{AllocFlags, KPALLOC_PAGE_SIZE};

fn allocator() -> Result<&'static Allocator<CHooks>, PageStatus> {
    installed().ok_or(PageStatus::EUNINIT)
}

/// Physically contiguous pages holding one reference to their block.
///
/// `Clone` adds a reference, `Drop` drops one; the last drop frees the
/// block. All clones see the same memory.
#[derive(Debug)]
pub struct ContigPages {
    pa: PhysAddr,
    pages: usize,
}

impl ContigPages {
    /// Allocates at least `size` bytes of whole pages; `None` when memory
    /// runs out, before `page_init`, or for a zero size (reported as misuse,
    /// `EINVAL`).
    #[track_caller]
    pub fn new(size: usize) -> Option<Self> {
        Self::new_with_align(size, KPALLOC_PAGE_SIZE)
    }

    /// As [`ContigPages::new`], with the physical address a multiple of
    /// `align` bytes (a power of two, else `None` reported as misuse; at
    /// least a page is always given).
    #[track_caller]
    pub fn new_with_align(size: usize, align: usize) -> Option<Self> {
        let pages = size.div_ceil(KPALLOC_PAGE_SIZE);
        let align_pages = align.div_ceil(KPALLOC_PAGE_SIZE).max(1);
        Self::alloc(pages, align_pages, AllocFlags::NONE).ok()
    }

    /// Allocates `pages` pages aligned to `align_pages` pages, with `flags`.
    #[track_caller]
    pub fn alloc(pages: usize, align_pages: usize, flags: AllocFlags) -> Result<Self, PageStatus> {
        let pa = allocator()?.alloc(pages, align_pages, flags)?;
        Ok(ContigPages { pa, pages })
    }

    /// Physical address of the first page.
    pub fn pa(&self) -> PhysAddr {
        self.pa
    }

    /// Kernel virtual address of the first page.
    pub fn kva(&self) -> VirtAddr {
        VirtAddr::new_truncate(allocator().map_or(0, |a| a.kva(self.pa)) as u64)
    }

    /// Number of pages.
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// The current reference count.
    pub fn refcount(&self) -> u32 {
        allocator().map_or(0, |a| a.refcount(self.pa))
    }

    /// The block's bytes.
    pub fn inner(&self) -> &[u8] {
        // SAFETY: this handle holds a reference, and no safe code can give
        // it up but the handle (`global`, `page_free` and the other releases
        // are unsafe for that), so the block stays allocated while `self`
        // is borrowed; writers need `inner_mut` on a sole reference, which
        // cannot coexist with this borrow.
        unsafe { crate::raw::block_bytes(self.kva().as_u64() as usize, self.pages * KPALLOC_PAGE_SIZE) }
    }

    /// The block's bytes for writing, if this is its only reference
    /// (`None` while it is shared: two handles must not both write).
    pub fn inner_mut(&mut self) -> Option<&mut [u8]> {
        if self.refcount() != 1 {
            return None;
        }
        // SAFETY: the block is allocated and this handle is its only
        // reference, borrowed mutably: no other slice of it can exist.
        Some(unsafe { crate::raw::block_bytes_mut(self.kva().as_u64() as usize, self.pages * KPALLOC_PAGE_SIZE) })
    }

    /// Gives up the handle without dropping its reference; take it back
    /// with [`ContigPages::from_pa`].
    pub fn into_raw(self) -> PhysAddr {
        ManuallyDrop::new(self).pa
    }

    /// Takes back a reference given up by [`ContigPages::into_raw`] (or a
    /// block allocated through the C API); `None` if no block is headed
    /// at `pa`.
    ///
    /// # Safety
    /// The caller must own one reference to the block at `pa` and hand it
    /// over: using it again afterwards would drop it twice.
    pub unsafe fn from_pa(pa: PhysAddr) -> Option<Self> {
        let pages = allocator().ok()?.block_pages(pa);
        (pages != 0).then_some(ContigPages { pa, pages })
    }

    /// Splits a block held by this sole reference into single pages, each
    /// with its own reference; gives the block back if it is shared (a
    /// refusal reported as misuse, `ESHARED`: check `refcount` first to
    /// avoid it).
    pub fn split(self) -> Result<SplitPages, Self> {
        match allocator().and_then(|a| a.split(self.pa)) {
            Ok(()) => {
                let this = ManuallyDrop::new(self);
                Ok(SplitPages {
                    next: this.pa,
                    left: this.pages,
                })
            }
            Err(_) => Err(self),
        }
    }
}

impl Clone for ContigPages {
    /// Adds a reference. Panics only if the count is at
    /// `PAGE_REFCOUNT_MAX`, which means references are leaking.
    fn clone(&self) -> Self {
        match allocator().and_then(|a| a.get(self.pa)) {
            Ok(()) => ContigPages {
                pa: self.pa,
                pages: self.pages,
            },
            Err(status) => panic!("kpalloc: cannot add a reference: {status}"),
        }
    }
}

impl Drop for ContigPages {
    fn drop(&mut self) {
        // A handle holds a reference that only it gives up (see `inner`),
        // so this is not refused.
        let _ = allocator().and_then(|a| a.put(self.pa));
    }
}

/// The pages of a split block, each yielded as its own [`Page`]; pages not
/// taken are released when this is dropped.
#[derive(Debug)]
pub struct SplitPages {
    next: PhysAddr,
    left: usize,
}

impl Iterator for SplitPages {
    type Item = Page;

    fn next(&mut self) -> Option<Page> {
        if self.left == 0 {
            return None;
        }
        let page = Page {
            block: ContigPages {
                pa: self.next,
                pages: 1,
            },
        };
        self.next += KPALLOC_PAGE_SIZE as u64;
        self.left -= 1;
        Some(page)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for SplitPages {}

impl Drop for SplitPages {
    fn drop(&mut self) {
        self.for_each(drop);
    }
}

/// One page holding one reference; see [`ContigPages`].
#[derive(Debug, Clone)]
pub struct Page {
    block: ContigPages,
}

impl Page {
    /// Allocates a page; `None` when memory runs out or before `page_init`.
    #[track_caller]
    pub fn new() -> Option<Self> {
        Some(Page {
            block: ContigPages::alloc(1, 1, AllocFlags::NONE).ok()?,
        })
    }

    /// Allocates a zero-filled page.
    #[track_caller]
    pub fn new_zeroed() -> Option<Self> {
        Some(Page {
            block: ContigPages::alloc(1, 1, AllocFlags::ZERO).ok()?,
        })
    }

    /// Physical address of the page.
    pub fn pa(&self) -> PhysAddr {
        self.block.pa()
    }

    /// Kernel virtual address of the page.
    pub fn kva(&self) -> VirtAddr {
        self.block.kva()
    }

    /// The current reference count.
    pub fn refcount(&self) -> u32 {
        self.block.refcount()
    }

    /// The page's bytes.
    pub fn inner(&self) -> &[u8] {
        self.block.inner()
    }

    /// The page's bytes for writing, if this is its only reference.
    pub fn inner_mut(&mut self) -> Option<&mut [u8]> {
        self.block.inner_mut()
    }

    /// Gives up the handle without dropping its reference.
    pub fn into_raw(self) -> PhysAddr {
        self.block.into_raw()
    }

    /// Takes back a reference to a single-page block.
    ///
    /// # Safety
    /// As [`ContigPages::from_pa`].
    pub unsafe fn from_pa(pa: PhysAddr) -> Option<Self> {
        // SAFETY: the caller's contract is the same.
        let block = unsafe { ContigPages::from_pa(pa) }?;
        if block.pages == 1 {
            Some(Page { block })
        } else {
            // Not ours to drop: hand the reference back.
            block.into_raw();
            None
        }
    }
}

/// A borrowed page: no reference of its own, valid while `'a` lasts.
#[derive(Debug, Clone, Copy)]
pub struct PageRef<'a> {
    pa: PhysAddr,
    _owner: PhantomData<&'a Page>,
}

impl<'a> PageRef<'a> {
    /// Borrows `page` without adding a reference.
    pub fn new(page: &'a Page) -> Self {
        PageRef {
            pa: page.pa(),
            _owner: PhantomData,
        }
    }

    /// Borrows the page at `pa`.
    ///
    /// # Safety
    /// Someone must hold a reference to the page's block for all of `'a`.
    pub unsafe fn from_pa(pa: PhysAddr) -> Self {
        PageRef {
            pa,
            _owner: PhantomData,
        }
    }

    /// Physical address of the page.
    pub fn pa(&self) -> PhysAddr {
        self.pa
    }

    /// A new owned reference to the page (`page_get`): `EOVERFLOW` at
    /// `PAGE_REFCOUNT_MAX`, `EUNINIT` before `page_init`. From the head of
    /// a longer block (a `PageRef` made with `from_pa`), the `Page` covers
    /// the first page and holds a reference to the whole block.
    pub fn to_page(&self) -> Result<Page, PageStatus> {
        allocator()?.get(self.pa)?;
        Ok(Page {
            block: ContigPages { pa: self.pa, pages: 1 },
        })
    }
}

impl Frames<'static, CHooks> {
    /// Kernel-pool frames from the global allocator, if `page_init` ran.
    pub fn global() -> Option<Self> {
        // SAFETY: safe code cannot release the global allocator's blocks
        // behind a holder's back (`global` and `page_free` are unsafe).
        Some(unsafe { Frames::new(installed()?, AllocFlags::NONE) })
    }
}
