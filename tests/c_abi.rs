//! The C ABI's global allocator, called from Rust as C would: the whole
//! life cycle in one test (the global is set up once per process), small
//! enough to run under Miri.

mod common;

use std::ffi::{c_void, CStr};
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{TestMemory, PAGE};
use kpalloc::ffi::*;
use kpalloc::types::{PAGE_ALLOC_USER, PAGE_ALLOC_ZERO, PAGE_POOL_KERNEL, PAGE_POOL_USER};
use kpalloc::{PageConfig, PageStats, PageStatus};

static MISUSE: AtomicU64 = AtomicU64::new(0);
static LAST_MISUSE: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_misuse(status: PageStatus, addr: *const c_void) {
    MISUSE.fetch_add(1, Ordering::SeqCst);
    LAST_MISUSE.store(
        (status as u64) << 56 | addr.addr() as u64 & ((1 << 56) - 1),
        Ordering::SeqCst,
    );
}

fn stats() -> PageStats {
    let mut stats = PageStats::default();
    // SAFETY: a valid out-pointer.
    assert_eq!(unsafe { page_stats_get(&mut stats) }, PageStatus::OK);
    stats
}

#[test]
fn the_c_abi_from_init_to_the_last_free() {
    // SAFETY (the three releases): they give up only references this test
    // took itself, which no handle holds; the misuse among them is refused.
    let free = |block: *mut c_void| unsafe { page_free(block) };
    let put = |block: *mut c_void| unsafe { page_put(block) };
    let split = |block: *mut c_void| unsafe { page_split(block) };
    // Before page_init: every call answers without doing anything.
    assert!(page_alloc(1, 0).is_null());
    assert_eq!(free(ptr::null_mut()), PageStatus::EUNINIT);
    assert_eq!(page_refcount(ptr::null()), 0);
    assert_eq!(page_check(), PageStatus::EUNINIT);

    let memory = TestMemory::new(0x20_0000, 96);
    let config = PageConfig {
        phys_offset: memory.phys_offset,
        on_misuse: Some(on_misuse),
        ..PageConfig::default()
    };
    let bad_debug = PageConfig {
        debug: 1 << 31,
        ..config
    };
    // SAFETY: valid configs.
    unsafe {
        assert_eq!(page_init(&bad_debug), PageStatus::EINVAL);
        assert_eq!(page_init(&config), PageStatus::OK);
        assert_eq!(page_init(&config), PageStatus::EBUSY);
    }
    let base = memory.phys_base;
    // SAFETY: ranges inside the leaked test memory, each added once.
    unsafe {
        assert_eq!(page_region_add(base, base + 64 * PAGE, 7), PageStatus::EINVAL);
        assert_eq!(page_region_add(base, 1 << 60, PAGE_POOL_KERNEL), PageStatus::EINVAL);
        assert_eq!(
            page_region_add(base, base + 64 * PAGE, PAGE_POOL_KERNEL),
            PageStatus::OK
        );
        assert_eq!(
            page_region_add(base + 32 * PAGE, base + 96 * PAGE, PAGE_POOL_USER),
            PageStatus::EOVERLAP
        );
        assert_eq!(
            page_region_add(base + 64 * PAGE, base + 96 * PAGE, PAGE_POOL_USER),
            PageStatus::OK
        );
    }
    // bad debug bits, second init, unknown pool, beyond 2^52, overlap.
    assert_eq!(MISUSE.load(Ordering::SeqCst), 5);
    // The misuse address of a region is its physical start; LAST_MISUSE
    // keeps the address's low 56 bits.
    assert_eq!(LAST_MISUSE.load(Ordering::SeqCst) & ((1 << 56) - 1), base + 32 * PAGE);
    if cfg!(target_pointer_width = "32") {
        // Beyond a 32-bit kernel's pointers: refused, and named by NULL, not
        // by a cut-off address that looks valid.
        // SAFETY: refused before anything is written.
        let beyond = unsafe { page_region_add((1 << 32) + 16 * PAGE, (1 << 32) + 32 * PAGE, PAGE_POOL_KERNEL) };
        assert_eq!(beyond, PageStatus::EINVAL);
        assert_eq!(LAST_MISUSE.load(Ordering::SeqCst), (PageStatus::EINVAL as u64) << 56);
    }
    let fresh = stats();
    assert_eq!((fresh.regions, fresh.total_pages, fresh.used_pages), (2, 96, 0));

    // Allocate, write, share, split, free: addresses are kernel virtual.
    let block = page_alloc(3, PAGE_ALLOC_ZERO);
    assert!(!block.is_null());
    assert_eq!(page_to_pa(block), base + PAGE);
    assert_eq!(page_from_pa(base + PAGE), block);
    // No kernel virtual address: past 2^64, or past the pointer's width.
    assert!(page_from_pa(u64::MAX).is_null());
    assert_eq!(page_from_pa(1 << 40).is_null(), cfg!(target_pointer_width = "32"));
    assert_eq!(page_block_pages(block), 3);
    // SAFETY: the block is ours: 3 pages.
    unsafe {
        let bytes = std::slice::from_raw_parts_mut(block.cast::<u8>(), 3 * PAGE as usize);
        assert!(bytes.iter().all(|&b| b == 0));
        bytes.fill(0x5A);
    }
    assert_eq!(page_get(block), PageStatus::OK);
    assert_eq!(page_refcount(block), 2);
    assert_eq!(split(block), PageStatus::ESHARED);
    assert_eq!(free(block), PageStatus::ESHARED);
    assert_eq!(put(block), PageStatus::OK);
    assert_eq!(split(block), PageStatus::OK);
    let second: *mut c_void = block.cast::<u8>().wrapping_add(PAGE as usize).cast();
    assert_eq!((page_refcount(second), page_block_pages(second)), (1, 1));
    // SAFETY: after the split each page is its own block, still ours.
    assert_eq!(unsafe { *second.cast::<u8>() }, 0x5A);

    let user = page_alloc(2, PAGE_ALLOC_USER);
    assert_eq!(page_to_pa(user) / PAGE, base / PAGE + 64 + 1);
    assert_eq!(stats().used_pages, 5);
    assert_eq!(page_check(), PageStatus::OK);

    // Misuse: its own status, nothing changes, the hook hears about it.
    let before = MISUSE.load(Ordering::SeqCst);
    assert_eq!(free(ptr::null_mut()), PageStatus::ENOTMANAGED);
    assert_eq!(
        free(user.cast::<u8>().wrapping_add(PAGE as usize).cast()),
        PageStatus::ENOTHEAD
    );
    assert_eq!(free(user.cast::<u8>().wrapping_add(1).cast()), PageStatus::ENOTMANAGED);
    assert!(page_alloc(1, 1 << 9).is_null());
    assert!(page_alloc_aligned(1, 3, 0).is_null());
    assert_eq!(page_alloc_at(base + 10 * PAGE, 1, 1 << 9), PageStatus::EINVAL);
    assert_eq!(page_alloc_at(1 << 60, 1, 0), PageStatus::ENOTMANAGED);
    assert_eq!(page_alloc_at(base + 2 * PAGE, 1, 0), PageStatus::EBUSY);
    // SAFETY: NULL is allowed and refused.
    assert_eq!(unsafe { page_stats_get(ptr::null_mut()) }, PageStatus::EINVAL);
    assert_eq!(MISUSE.load(Ordering::SeqCst), before + 9);
    assert_eq!(LAST_MISUSE.load(Ordering::SeqCst) >> 56, PageStatus::EINVAL as u64);
    assert!(page_alloc(1000, 0).is_null()); // exhaustion is not misuse
    assert_eq!(MISUSE.load(Ordering::SeqCst), before + 9);
    assert_eq!(stats().used_pages, 5);

    assert_eq!(page_alloc_at(base + 10 * PAGE, 2, 0), PageStatus::OK);
    assert_eq!(free(page_from_pa(base + 10 * PAGE)), PageStatus::OK);
    for i in 0..3 {
        assert_eq!(
            free(block.cast::<u8>().wrapping_add(i * PAGE as usize).cast()),
            PageStatus::OK
        );
    }
    assert_eq!(put(user), PageStatus::OK);
    assert_eq!(free(user), PageStatus::ENOTALLOCATED);
    let end = stats();
    assert_eq!(
        (end.used_pages, end.free_pages, end.high_water_pages),
        (0, fresh.free_pages, 7)
    );
    assert_eq!(page_check(), PageStatus::OK);
    // SAFETY: page_status_str returns a static C string.
    let name = unsafe { CStr::from_ptr(page_status_str(PageStatus::ESHARED as u32)) };
    assert_eq!(name, c"PAGE_ESHARED");
}
