//! The Rust page types over the global allocator (the one `page_init` sets
//! up), and the C ABI called from Rust. One process, one global: the tests
//! take a lock so that their counts do not mix.

mod common;

use std::ffi::c_void;
use std::sync::{Mutex, MutexGuard, OnceLock};

use common::{TestMemory, PAGE};
use kpalloc::ffi::*;
use kpalloc::{global, AllocFlags, ContigPages, Frames, Page, PageConfig, PageRef, PageStatus};
use x86_64::structures::paging::{FrameAllocator, FrameDeallocator};
use x86_64::PhysAddr;

const PAGES: u64 = 512;

fn setup() -> MutexGuard<'static, TestMemory> {
    static MEMORY: OnceLock<Mutex<TestMemory>> = OnceLock::new();
    MEMORY
        .get_or_init(|| {
            let memory = TestMemory::new(0x10_0000, PAGES);
            let config = PageConfig {
                phys_offset: memory.phys_offset,
                ..PageConfig::default()
            };
            assert_eq!(
                unsafe { page_region_add(memory.pa(0).as_u64(), memory.pa(PAGES).as_u64(), 0) },
                PageStatus::EUNINIT
            );
            assert!(page_alloc(1, 0).is_null());
            assert_eq!(unsafe { page_init(&config) }, PageStatus::OK);
            assert_eq!(unsafe { page_init(&config) }, PageStatus::EBUSY);
            let status = unsafe { page_region_add(memory.pa(0).as_u64(), memory.pa(PAGES).as_u64(), 0) };
            assert_eq!(status, PageStatus::OK);
            Mutex::new(memory)
        })
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn used_pages() -> u64 {
    // SAFETY: reads the counters; releases nothing.
    unsafe { global() }.unwrap().stats().used_pages
}

#[test]
fn clone_adds_a_reference_and_drop_removes_it() {
    let _memory = setup();
    let before = used_pages();
    let page = Page::new().unwrap();
    assert_eq!(page.refcount(), 1);
    let copy = page.clone();
    assert_eq!((page.refcount(), copy.pa()), (2, page.pa()));
    drop(copy);
    assert_eq!(page.refcount(), 1);
    assert_eq!(used_pages(), before + 1);
    drop(page);
    assert_eq!(used_pages(), before);
    assert_eq!(page_check(), PageStatus::OK);
}

#[test]
fn a_shared_block_cannot_be_written_through_one_handle() {
    let _memory = setup();
    let mut block = ContigPages::new(3 * PAGE as usize).unwrap();
    block.inner_mut().unwrap().fill(7);
    let other = block.clone();
    assert!(block.inner_mut().is_none());
    assert!(other.inner().iter().all(|&b| b == 7));
    drop(other);
    assert!(block.inner_mut().is_some());
}

#[test]
fn split_yields_independent_pages_that_free_one_by_one() {
    let _memory = setup();
    let before = used_pages();
    let block = ContigPages::new(4 * PAGE as usize).unwrap();
    let first = block.pa();
    let mut pages: Vec<Page> = block.split().unwrap().collect();
    assert_eq!(pages.len(), 4);
    for (i, page) in pages.iter().enumerate() {
        assert_eq!(page.pa(), first + i as u64 * PAGE);
        assert_eq!(page.refcount(), 1);
    }
    pages.remove(1);
    assert_eq!(used_pages(), before + 3);
    drop(pages);
    assert_eq!(used_pages(), before);
}

#[test]
fn split_of_a_shared_block_gives_it_back() {
    let _memory = setup();
    let block = ContigPages::new(2 * PAGE as usize).unwrap();
    let other = block.clone();
    let block = block.split().unwrap_err();
    assert_eq!(block.refcount(), 2);
    drop(other);
    let taken = block.split().unwrap().take(1).count();
    assert_eq!(taken, 1);
    assert_eq!(page_check(), PageStatus::OK);
}

#[test]
fn into_raw_and_from_pa_hand_a_reference_over() {
    let _memory = setup();
    let before = used_pages();
    let block = ContigPages::new_with_align(5 * PAGE as usize, 8 * PAGE as usize).unwrap();
    assert_eq!(block.pa().as_u64() % (8 * PAGE), 0);
    let pa = block.into_raw();
    assert_eq!(used_pages(), before + 5);
    let back = unsafe { ContigPages::from_pa(pa) }.unwrap();
    assert_eq!(back.pages(), 5);
    assert!(unsafe { Page::from_pa(pa) }.is_none(), "a 5-page block is not a Page");
    drop(back);
    assert_eq!(used_pages(), before);
    assert!(
        unsafe { ContigPages::from_pa(pa) }.is_none(),
        "nothing is headed there now"
    );
}

#[test]
fn page_ref_borrows_without_a_reference_and_can_take_one() {
    let _memory = setup();
    let page = Page::new_zeroed().unwrap();
    assert!(page.inner().iter().all(|&b| b == 0));
    let borrowed = PageRef::new(&page);
    assert_eq!(page.refcount(), 1);
    let owned = borrowed.to_page().unwrap();
    assert_eq!(owned.refcount(), 2);
}

#[test]
fn frames_implement_the_x86_64_traits() {
    let _memory = setup();
    let before = used_pages();
    let mut frames = Frames::global().unwrap();
    let frame = frames.allocate_frame().unwrap();
    assert_eq!(used_pages(), before + 1);
    unsafe { frames.deallocate_frame(frame) };
    assert_eq!(used_pages(), before);
    // SAFETY: its frames go back through it only, and `global` is used for
    // nothing else.
    let mut dma = unsafe { Frames::new(global().unwrap(), AllocFlags::DMA32) };
    let low = dma.allocate_frame().unwrap();
    assert!(low.start_address().as_u64() < 1 << 32);
    unsafe { dma.deallocate_frame(low) };
}

#[test]
fn c_abi_round_trip_from_rust() {
    let memory = setup();
    // SAFETY (the three releases): only this test's own references are given
    // up (no handle holds them), and the misuse among the calls is refused.
    let free = |block: *mut c_void| unsafe { page_free(block) };
    let put = |block: *mut c_void| unsafe { page_put(block) };
    let split = |block: *mut c_void| unsafe { page_split(block) };
    let block = page_alloc_aligned(4, 4, kpalloc::types::PAGE_ALLOC_ZERO);
    assert!(!block.is_null());
    let pa = page_to_pa(block);
    assert_eq!(pa % (4 * PAGE), 0);
    assert_eq!(page_from_pa(pa), block);
    assert_eq!(page_block_pages(block), 4);
    assert_eq!(page_get(block), PageStatus::OK);
    assert_eq!(page_refcount(block), 2);
    assert_eq!(free(block), PageStatus::ESHARED);
    assert_eq!(put(block), PageStatus::OK);
    let interior = block.cast::<u8>().wrapping_add(PAGE as usize).cast();
    assert_eq!(free(interior), PageStatus::ENOTHEAD);
    assert_eq!(split(block), PageStatus::OK);
    assert_eq!(free(interior), PageStatus::OK);
    for i in [0, 2, 3] {
        assert_eq!(
            free(block.cast::<u8>().wrapping_add(i * PAGE as usize).cast()),
            PageStatus::OK
        );
    }
    assert_eq!(free(block), PageStatus::ENOTALLOCATED);
    assert_eq!(free(std::ptr::null_mut()), PageStatus::ENOTMANAGED);
    assert!(page_alloc(1, 1 << 10).is_null());
    let unknown_pool = unsafe { page_region_add(1 << 40, (1 << 40) + 64 * PAGE, 7) };
    assert_eq!(unknown_pool, PageStatus::EINVAL);
    assert!(page_alloc(0, 0).is_null());
    assert_eq!(page_alloc_at(memory.pa(PAGES - 1).as_u64(), 1, 0), PageStatus::OK);
    assert_eq!(page_alloc_at(memory.pa(PAGES - 1).as_u64(), 1, 0), PageStatus::EBUSY);
    assert_eq!(free(page_from_pa(memory.pa(PAGES - 1).as_u64())), PageStatus::OK);
    let mut stats = kpalloc::PageStats::default();
    assert_eq!(unsafe { page_stats_get(&mut stats) }, PageStatus::OK);
    assert_eq!(unsafe { page_stats_get(std::ptr::null_mut()) }, PageStatus::EINVAL);
    assert_eq!(stats.total_pages, PAGES);
    assert_eq!(page_check(), PageStatus::OK);
    let name = unsafe { std::ffi::CStr::from_ptr(page_status_str(PageStatus::ENOTHEAD as u32)) };
    assert_eq!(name.to_str().unwrap(), "PAGE_ENOTHEAD");
    let unknown = unsafe { std::ffi::CStr::from_ptr(page_status_str(99)) };
    assert_eq!(unknown.to_str().unwrap(), "PAGE_UNKNOWN");
    assert_eq!(PhysAddr::new(pa), PhysAddr::new(page_to_pa(page_from_pa(pa))));
}
