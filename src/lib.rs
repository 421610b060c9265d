//! # kpalloc: a refcounted bitmap page allocator for kernels
//!
//! kpalloc manages physical memory in 4 KiB pages for C and Rust kernels.
//! Memory is handed over as regions; each keeps its metadata (a free
//! bitmap with search summaries, and a 32-bit slot per page for the
//! reference count or block length) in its own first pages, so kpalloc
//! needs no heap and no fixed table, and never touches a page before it is
//! allocated.
//!
//! | | Rust | C (`include/kpalloc.h`) |
//! |---|---|---|
//! | set up | [`Allocator::new`] / [`ffi::page_init`] | `page_init(&cfg)` |
//! | add memory | [`Allocator::add_region`] | `page_region_add(start, end, PAGE_POOL_KERNEL)` |
//! | allocate | [`Page::new`], [`ContigPages::new_with_align`], [`Allocator::alloc`] | `page_alloc(n, flags)`, `page_alloc_aligned(n, align, flags)` |
//! | share | `Clone` | `page_get(p)` |
//! | release | `Drop` | `page_put(p)` / `page_free(p)` |
//! | split a block | [`ContigPages::split`] | `page_split(p)` |
//! | frames for page tables | [`Frames`] (`x86_64::FrameAllocator`) | `page_alloc(1, PAGE_ALLOC_ZERO)` |
//!
//! Every misuse (double free, interior page, shared block, unmanaged
//! address, ...) returns its own [`PageStatus`] and changes nothing, in
//! release builds too.
//!
//! Features: `std` (default) for hosted use; a Rust kernel depends on
//! kpalloc with `default-features = false`, and its own panic handler
//! runs. `global` (default) is the allocator `page_init` installs: the C
//! ABI, whose `#[no_mangle]` `page_*` functions a kernel that embeds its
//! own [`Allocator`] leaves out of its binary by leaving `global` off, and
//! the RAII types over it ([`Page`], [`ContigPages`], `Frames::global`).
//! `panic-handler` gives the C static library (built without std) a
//! handler that calls the kernel's `panic` hook, and implies `global`;
//! `header` (default) regenerates `include/kpalloc.h`.
//!
//! The core (`freemap`, `region`, [`allocator`]) is safe Rust; metadata is
//! carved out of raw memory and pages are filled only in `raw`, the C ABI
//! lives in [`ffi`], the lock-guarded metadata cell in `sync`.

#![no_std]
// Without `global`, the links above to `Page`, `ContigPages` and `ffi` have
// nothing to point at: they show as plain code.
#![cfg_attr(not(feature = "global"), allow(rustdoc::broken_intra_doc_links))]
#![warn(missing_docs)]

#[cfg(any(test, feature = "std"))]
extern crate std;

pub mod allocator;
mod cache;
#[cfg(feature = "global")]
pub mod ffi;
mod frames;
mod freemap;
mod message;
#[cfg(feature = "global")]
mod pages;
mod raw;
mod refcount;
mod region;
pub mod status;
mod sync;
mod tag;
/// The tests' stand-in for RAM: one rule with the integration tests.
#[cfg(test)]
#[path = "../tests/common/placement.rs"]
mod test_ram;
pub mod types;

pub use allocator::{Allocator, Config, Hooks, LiveBlock, NoHooks, PageStats};
pub use cache::CpuCaches;
#[cfg(feature = "global")]
pub use ffi::{global, CHooks, PageConfig, PageLiveBlock};
pub use frames::Frames;
#[cfg(feature = "global")]
pub use pages::{ContigPages, Page, PageRef, SplitPages};
pub use status::PageStatus;
pub use tag::Tag;
pub use types::{AllocFlags, DebugFlags, Pfn, Pool, KPALLOC_PAGE_SIZE};

/// The crate's version, also in the header as `KPALLOC_VERSION_*`.
pub const KPALLOC_VERSION_MAJOR: u32 = 0;
/// See [`KPALLOC_VERSION_MAJOR`].
pub const KPALLOC_VERSION_MINOR: u32 = 1;
/// See [`KPALLOC_VERSION_MAJOR`].
pub const KPALLOC_VERSION_PATCH: u32 = 0;

/// In the C library without std a panic can only be an internal bug: it
/// goes to the kernel's panic hook with a fixed message, then halts. (A
/// Rust kernel builds kpalloc without this feature: its own handler runs.)
#[cfg(all(feature = "panic-handler", not(feature = "std")))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    if let Some(allocator) = ffi::installed() {
        allocator.hooks().panic(c"kpalloc: internal error");
    }
    raw::halt()
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_constants_match_the_package() {
        let mut parts = env!("CARGO_PKG_VERSION")
            .split('.')
            .map(|part| part.parse::<u32>().unwrap());
        let version = [
            super::KPALLOC_VERSION_MAJOR,
            super::KPALLOC_VERSION_MINOR,
            super::KPALLOC_VERSION_PATCH,
        ];
        assert!(version.iter().all(|&n| Some(n) == parts.next()));
    }
}
