//! The allocator instance, through its Rust API: behaviour as specified.

mod common;

use common::{TestMemory, PAGE};
use kpalloc::{AllocFlags, Allocator, Config, DebugFlags, NoHooks, PageStatus, Pool};
use x86_64::PhysAddr;

const NONE: AllocFlags = AllocFlags::NONE;

fn one_region(pages: u64) -> (TestMemory, kpalloc::Allocator) {
    one_region_with_debug(pages, DebugFlags::NONE)
}

fn one_region_with_debug(pages: u64, debug: DebugFlags) -> (TestMemory, kpalloc::Allocator) {
    let memory = TestMemory::new(0x10_0000, pages);
    let allocator = memory.allocator_with_debug(debug);
    memory.add(&allocator, 0, pages, Pool::Kernel).unwrap();
    (memory, allocator)
}

#[test]
fn a_new_region_reports_its_pages_and_metadata() {
    let (_memory, allocator) = one_region(256);
    let stats = allocator.stats();
    assert_eq!(stats.total_pages, 256);
    assert_eq!(stats.metadata_pages, 1);
    assert_eq!(stats.free_pages, 255);
    assert_eq!(stats.used_pages, 0);
    assert_eq!(stats.regions, 1);
    assert_eq!(stats.largest_free_run, 255);
    assert!(allocator.check().is_ok());
}

#[test]
fn allocation_is_first_fit_from_the_lowest_address() {
    let (memory, allocator) = one_region(256);
    let a = allocator.alloc(1, 1, NONE).unwrap();
    let b = allocator.alloc(2, 1, NONE).unwrap();
    assert_eq!(a, memory.pa(1));
    assert_eq!(b, memory.pa(2));
    allocator.free(a).unwrap();
    assert_eq!(allocator.alloc(1, 1, NONE).unwrap(), memory.pa(1));
    assert!(allocator.check().is_ok());
}

#[test]
fn a_block_remembers_its_length_and_frees_all_of_it() {
    let (_memory, allocator) = one_region(256);
    let block = allocator.alloc(10, 1, NONE).unwrap();
    assert_eq!(allocator.block_pages(block), 10);
    assert_eq!(allocator.refcount(block), 1);
    assert_eq!(allocator.stats().used_pages, 10);
    allocator.free(block).unwrap();
    assert_eq!(allocator.stats().used_pages, 0);
    assert_eq!(allocator.stats().largest_free_run, 255);
    assert!(allocator.check().is_ok());
}

#[test]
fn alignment_applies_to_the_physical_address() {
    // Physical memory starting at an odd page: alignment must not follow
    // the region's first page.
    let memory = TestMemory::new(0x10_3000, 1024);
    let allocator = memory.allocator();
    memory.add(&allocator, 0, 1024, Pool::Kernel).unwrap();
    for align in [2, 8, 64, 128, 256] {
        let block = allocator.alloc(3, align, NONE).unwrap();
        assert_eq!(block.as_u64() % (align as u64 * PAGE), 0, "align {align}");
    }
    assert!(allocator.check().is_ok());
}

#[test]
fn sized_free_frees_a_block_of_the_length_given() {
    let (_memory, allocator) = one_region(64);
    let block = allocator.alloc(6, 1, NONE).unwrap();
    assert_eq!(allocator.free_sized(block, 5), Err(PageStatus::EINVAL));
    assert_eq!(allocator.free_sized(block, 7), Err(PageStatus::EINVAL));
    assert_eq!(allocator.block_pages(block), 6);
    allocator.free_sized(block, 6).unwrap();
    assert_eq!(allocator.stats().used_pages, 0);
    assert!(allocator.check().is_ok());
}

#[test]
fn get_and_put_count_references_and_the_last_put_frees() {
    let (_memory, allocator) = one_region(64);
    let block = allocator.alloc(4, 1, NONE).unwrap();
    allocator.get(block).unwrap();
    allocator.get(block).unwrap();
    assert_eq!(allocator.refcount(block), 3);
    assert_eq!(allocator.free(block), Err(PageStatus::ESHARED));
    allocator.put(block).unwrap();
    allocator.put(block).unwrap();
    assert_eq!(allocator.stats().used_pages, 4);
    allocator.put(block).unwrap();
    assert_eq!(allocator.stats().used_pages, 0);
    assert_eq!(allocator.refcount(block), 0);
    assert_eq!(allocator.get(block), Err(PageStatus::ENOTALLOCATED));
    assert!(allocator.check().is_ok());
}

#[test]
fn split_makes_independent_single_pages() {
    let (_memory, allocator) = one_region(64);
    let block = allocator.alloc(5, 1, NONE).unwrap();
    allocator.split(block).unwrap();
    for i in 0..5 {
        let page = block + i * PAGE;
        assert_eq!(allocator.refcount(page), 1);
        assert_eq!(allocator.block_pages(page), 1);
    }
    allocator.free(block + 2 * PAGE).unwrap();
    assert_eq!(allocator.stats().used_pages, 4);
    assert!(allocator.check().is_ok());
    for i in [0, 1, 3, 4] {
        allocator.free(block + i * PAGE).unwrap();
    }
    assert_eq!(allocator.stats().used_pages, 0);
}

#[test]
fn split_of_a_shared_block_is_refused_and_changes_nothing() {
    let (_memory, allocator) = one_region(64);
    let block = allocator.alloc(3, 1, NONE).unwrap();
    allocator.get(block).unwrap();
    assert_eq!(allocator.split(block), Err(PageStatus::ESHARED));
    assert_eq!(allocator.block_pages(block), 3);
    assert_eq!(allocator.refcount(block), 2);
    assert!(allocator.check().is_ok());
}

#[test]
fn the_last_page_of_a_region_can_be_allocated_and_freed() {
    let (memory, allocator) = one_region(70);
    allocator.alloc_at(memory.pa(69), 1, NONE).unwrap();
    assert_eq!(allocator.alloc_at(memory.pa(69), 2, NONE), Err(PageStatus::ENOTMANAGED));
    let mut last = None;
    while let Ok(pa) = allocator.alloc(1, 1, NONE) {
        last = Some(pa);
    }
    assert_eq!(last, Some(memory.pa(68)));
    allocator.free(memory.pa(69)).unwrap();
    assert_eq!(allocator.alloc(1, 1, NONE).unwrap(), memory.pa(69));
    assert!(allocator.check().is_ok());
}

#[test]
fn an_exhausted_region_is_skipped_for_the_next_one() {
    let memory = TestMemory::new(0x10_0000, 200);
    let allocator = memory.allocator();
    memory.add(&allocator, 0, 100, Pool::Kernel).unwrap();
    memory.add(&allocator, 100, 200, Pool::Kernel).unwrap();
    let stats = allocator.stats();
    let usable = stats.free_pages;
    for _ in 0..usable {
        allocator.alloc(1, 1, NONE).unwrap();
    }
    assert_eq!(allocator.alloc(1, 1, NONE), Err(PageStatus::ENOMEM));
    let stats = allocator.stats();
    assert_eq!((stats.free_pages, stats.failed_allocs, stats.misuse_reports), (0, 1, 0));
    assert!(allocator.check().is_ok());
}

#[test]
fn a_request_too_long_for_one_region_falls_through_to_a_larger_one() {
    let memory = TestMemory::new(0x10_0000, 300);
    let allocator = memory.allocator();
    memory.add(&allocator, 0, 50, Pool::Kernel).unwrap();
    memory.add(&allocator, 50, 300, Pool::Kernel).unwrap();
    let block = allocator.alloc(100, 1, NONE).unwrap();
    assert!(block >= memory.pa(50));
    assert!(allocator.check().is_ok());
}

#[test]
fn regions_added_out_of_order_are_searched_in_address_order() {
    let memory = TestMemory::new(0x10_0000, 300);
    let allocator = memory.allocator();
    memory.add(&allocator, 200, 300, Pool::Kernel).unwrap();
    memory.add(&allocator, 0, 100, Pool::Kernel).unwrap();
    memory.add(&allocator, 100, 200, Pool::Kernel).unwrap();
    assert!(allocator.alloc(1, 1, NONE).unwrap() < memory.pa(100));
    assert_eq!(allocator.stats().regions, 3);
    assert!(allocator.check().is_ok());
}

#[test]
fn many_regions_need_no_fixed_table_and_each_page_is_found_in_its_own() {
    // Tables up to sixteen regions are scanned and longer ones bisected:
    // each size frees and gets every page. Under Miri, one of each kind.
    let sizes: &[u64] = if cfg!(miri) {
        &[3, 40]
    } else {
        &[1, 2, 3, 4, 5, 8, 15, 16, 17, 40]
    };
    for &regions in sizes {
        let memory = TestMemory::new(0x10_0000, 20 * regions);
        let allocator = memory.allocator();
        for i in 0..regions {
            memory.add(&allocator, i * 20, i * 20 + 20, Pool::Kernel).unwrap();
        }
        assert_eq!(allocator.stats().regions, regions);
        let mut blocks = Vec::new();
        while let Ok(pa) = allocator.alloc(1, 1, NONE) {
            blocks.push(pa);
        }
        let stats = allocator.stats();
        assert_eq!(blocks.len() as u64, stats.used_pages);
        assert_eq!(blocks.len() as u64, stats.total_pages - stats.metadata_pages);
        for &pa in &blocks {
            allocator.get(pa).unwrap();
            allocator.put(pa).unwrap();
            allocator.free(pa).unwrap();
            assert_eq!(allocator.free(pa), Err(PageStatus::ENOTALLOCATED), "{regions} regions");
        }
        for i in 0..regions {
            // Each region's first page holds its metadata.
            assert_eq!(allocator.free(memory.pa(i * 20)), Err(PageStatus::ENOTMANAGED));
        }
        assert_eq!(allocator.free(memory.pa(20 * regions)), Err(PageStatus::ENOTMANAGED));
        assert_eq!(allocator.stats().used_pages, 0);
        assert!(allocator.check().is_ok());
    }
}

#[test]
fn pools_are_kept_apart() {
    let memory = TestMemory::new(0x10_0000, 200);
    let allocator = memory.allocator();
    memory.add(&allocator, 0, 100, Pool::Kernel).unwrap();
    memory.add(&allocator, 100, 200, Pool::User).unwrap();
    let user = allocator.alloc(1, 1, AllocFlags::USER).unwrap();
    let kernel = allocator.alloc(1, 1, NONE).unwrap();
    assert!(user >= memory.pa(100) && kernel < memory.pa(100));
    let user_free = allocator.stats().user_free_pages;
    for _ in 0..user_free {
        allocator.alloc(1, 1, AllocFlags::USER).unwrap();
    }
    assert_eq!(allocator.alloc(1, 1, AllocFlags::USER), Err(PageStatus::ENOMEM));
    assert!(allocator.alloc(1, 1, NONE).is_ok());
}

#[test]
fn zero_flag_clears_the_block() {
    let (memory, allocator) = one_region(16);
    let block = allocator.alloc(2, 1, NONE).unwrap();
    let kva = allocator.kva(block);
    unsafe {
        std::ptr::write_bytes(
            std::ptr::with_exposed_provenance_mut::<u8>(kva),
            0xAB,
            2 * PAGE as usize,
        )
    };
    allocator.free(block).unwrap();
    let again = allocator.alloc(2, 1, AllocFlags::ZERO).unwrap();
    assert_eq!(again, block);
    let bytes = unsafe { std::slice::from_raw_parts(std::ptr::with_exposed_provenance::<u8>(kva), 2 * PAGE as usize) };
    assert!(bytes.iter().all(|&b| b == 0));
    let _ = memory;
}

#[test]
fn huge_counts_and_alignments_fail_fast() {
    let (_memory, allocator) = one_region(64);
    assert_eq!(allocator.alloc(usize::MAX, 1, NONE), Err(PageStatus::ENOMEM));
    assert_eq!(
        allocator.alloc(1 << (usize::BITS - 24), 1, NONE),
        Err(PageStatus::ENOMEM)
    );
    assert_eq!(
        allocator.alloc(1, 1 << (usize::BITS - 2), NONE),
        Err(PageStatus::ENOMEM)
    );
    assert_eq!(allocator.alloc(64, 1, NONE), Err(PageStatus::ENOMEM));
    assert!(allocator.alloc(63, 1, NONE).is_ok());
}

/// Each misuse: its status, and nothing changed.
#[test]
fn every_misuse_is_refused_with_its_own_status_and_changes_nothing() {
    let (memory, allocator) = one_region(128);
    let block = allocator.alloc(4, 1, NONE).unwrap();
    let shared = allocator.alloc(1, 1, NONE).unwrap();
    allocator.get(shared).unwrap();
    let freed = allocator.alloc(1, 1, NONE).unwrap();
    allocator.free(freed).unwrap();
    let before = allocator.stats();

    let cases: Vec<(&str, Result<(), PageStatus>, PageStatus)> = vec![
        ("double free", allocator.free(freed), PageStatus::ENOTALLOCATED),
        (
            "free of interior page",
            allocator.free(block + PAGE),
            PageStatus::ENOTHEAD,
        ),
        ("free of shared block", allocator.free(shared), PageStatus::ESHARED),
        ("get on free page", allocator.get(freed), PageStatus::ENOTALLOCATED),
        ("put on free page", allocator.put(freed), PageStatus::ENOTALLOCATED),
        (
            "get on interior page",
            allocator.get(block + PAGE),
            PageStatus::ENOTHEAD,
        ),
        ("unaligned free", allocator.free(block + 8), PageStatus::ENOTMANAGED),
        ("metadata page", allocator.free(memory.pa(0)), PageStatus::ENOTMANAGED),
        (
            "outside every region",
            allocator.free(memory.pa(5000)),
            PageStatus::ENOTMANAGED,
        ),
        ("zero count", allocator.alloc(0, 1, NONE).map(drop), PageStatus::EINVAL),
        (
            "zero alignment",
            allocator.alloc(1, 0, NONE).map(drop),
            PageStatus::EINVAL,
        ),
        (
            "alignment not a power of two",
            allocator.alloc(1, 3, NONE).map(drop),
            PageStatus::EINVAL,
        ),
        (
            "alloc_at of a used page",
            allocator.alloc_at(block, 1, NONE),
            PageStatus::EBUSY,
        ),
        (
            "alloc_at unaligned",
            allocator.alloc_at(block + 1, 1, NONE),
            PageStatus::EINVAL,
        ),
        (
            "alloc_at beyond the region",
            allocator.alloc_at(memory.pa(127), 2, NONE),
            PageStatus::ENOTMANAGED,
        ),
        (
            "alloc_at wrong pool",
            allocator.alloc_at(memory.pa(100), 1, AllocFlags::USER),
            PageStatus::EINVAL,
        ),
        (
            "split of interior page",
            allocator.split(block + PAGE),
            PageStatus::ENOTHEAD,
        ),
        ("split of free page", allocator.split(freed), PageStatus::ENOTALLOCATED),
        ("split of shared block", allocator.split(shared), PageStatus::ESHARED),
        (
            "split outside every region",
            allocator.split(memory.pa(5000)),
            PageStatus::ENOTMANAGED,
        ),
        (
            "put on interior page",
            allocator.put(block + PAGE),
            PageStatus::ENOTHEAD,
        ),
        (
            "get outside every region",
            allocator.get(memory.pa(5000)),
            PageStatus::ENOTMANAGED,
        ),
        (
            "put on a metadata page",
            allocator.put(memory.pa(0)),
            PageStatus::ENOTMANAGED,
        ),
        (
            "alloc_at of no pages",
            allocator.alloc_at(memory.pa(100), 0, NONE),
            PageStatus::EINVAL,
        ),
        (
            "alloc_at of a block longer than any",
            allocator.alloc_at(memory.pa(100), 1 << 31, NONE),
            PageStatus::EINVAL,
        ),
        (
            "sized free with the wrong length",
            allocator.free_sized(block, 3),
            PageStatus::EINVAL,
        ),
        (
            "overlapping region",
            memory.add(&allocator, 100, 128, Pool::Kernel),
            PageStatus::EOVERLAP,
        ),
    ];
    for (name, result, status) in &cases {
        assert_eq!(*result, Err(*status), "{name}");
    }
    let after = allocator.stats();
    assert_eq!(after.misuse_reports, before.misuse_reports + cases.len() as u64);
    assert_eq!(
        after,
        kpalloc::PageStats {
            misuse_reports: after.misuse_reports,
            ..before
        }
    );
    assert!(allocator.check().is_ok());
    assert_eq!(allocator.refcount(shared), 2);
    assert_eq!(allocator.block_pages(block), 4);
    // The same allocations are still possible.
    assert_eq!(allocator.alloc(1, 1, NONE).unwrap(), freed);
}

#[test]
fn a_range_without_kernel_virtual_addresses_is_refused() {
    // Kernel virtual addresses that wrap around, and (on a 32-bit target)
    // ones from 4 GiB up: refused before any memory is touched.
    let kva_wraps = Allocator::new(
        Config {
            phys_offset: u64::MAX - 8 * PAGE + 1,
            debug: DebugFlags::NONE,
        },
        NoHooks,
    );
    let range = (PhysAddr::new(0x10_0000), PhysAddr::new(0x10_0000 + 16 * PAGE));
    // SAFETY (both calls): refused before anything is written; no memory
    // is behind these ranges.
    assert_eq!(
        unsafe { kva_wraps.add_region(range.0, range.1, Pool::Kernel) },
        Err(PageStatus::EINVAL)
    );
    if cfg!(target_pointer_width = "32") {
        let direct_map = Allocator::new(Config::default(), NoHooks);
        for (start, end) in [
            (1 << 32, (1 << 32) + 16 * PAGE),
            ((1 << 32) - 8 * PAGE, (1 << 32) + 8 * PAGE),
        ] {
            let result = unsafe { direct_map.add_region(PhysAddr::new(start), PhysAddr::new(end), Pool::Kernel) };
            assert_eq!(result, Err(PageStatus::EINVAL), "{start:#x}..{end:#x}");
        }
        assert_eq!(direct_map.stats().regions, 0);
    }
}

#[test]
fn bad_regions_are_refused_and_change_nothing() {
    let memory = TestMemory::new(0x10_0000, 64);
    let allocator = memory.allocator();
    let empty = unsafe { allocator.add_region(memory.pa(4), memory.pa(4), Pool::Kernel) };
    let reversed = unsafe { allocator.add_region(memory.pa(8), memory.pa(4), Pool::Kernel) };
    let inside_one_page = unsafe { allocator.add_region(memory.pa(4) + 1u64, memory.pa(5) - 1u64, Pool::Kernel) };
    assert_eq!(empty, Err(PageStatus::EINVAL));
    assert_eq!(reversed, Err(PageStatus::EINVAL));
    assert_eq!(inside_one_page, Err(PageStatus::ETOOSMALL));
    assert_eq!(memory.add(&allocator, 0, 1, Pool::Kernel), Err(PageStatus::ETOOSMALL));
    let stats = allocator.stats();
    assert_eq!((stats.regions, stats.total_pages, stats.misuse_reports), (0, 0, 4));
    assert_eq!(allocator.alloc(1, 1, NONE), Err(PageStatus::ENOMEM));
    // Rounded inward: a range with ragged ends keeps its whole pages.
    unsafe { allocator.add_region(memory.pa(0) + 100u64, memory.pa(10) + 100u64, Pool::Kernel) }.unwrap();
    assert_eq!(allocator.stats().total_pages, 9);
    assert!(allocator.check().is_ok());
}

#[test]
#[cfg_attr(
    any(miri, target_pointer_width = "32"),
    ignore = "needs a kernel virtual address above 4 GiB"
)]
fn dma32_allocations_stay_below_4_gib() {
    // 8 pages just below 4 GiB and 64 above, in one region.
    let memory = TestMemory::new((1 << 32) - 16 * PAGE, 80);
    let allocator = memory.allocator();
    memory.add(&allocator, 0, 80, Pool::Kernel).unwrap();
    let mut below = 0;
    while let Ok(pa) = allocator.alloc(1, 1, AllocFlags::DMA32) {
        assert!(pa.as_u64() + PAGE <= 1 << 32);
        below += 1;
    }
    assert!(below > 0 && below < 16);
    assert!(allocator.alloc(1, 1, NONE).unwrap().as_u64() >= 1 << 32);
    assert!(allocator.check().is_ok());
}

/// A poisoning allocator over 32 pages, and a two-page block allocated and
/// freed in it (so poisoned).
fn a_poisoned_block() -> (TestMemory, kpalloc::Allocator, x86_64::PhysAddr) {
    let (memory, allocator) = one_region_with_debug(32, DebugFlags::POISON);
    let block = allocator.alloc(2, 1, NONE).unwrap();
    allocator.free(block).unwrap();
    assert!(allocator.check().is_ok());
    (memory, allocator, block)
}

#[test]
fn poisoning_reports_a_write_after_free_when_the_page_comes_back() {
    let (memory, allocator, block) = a_poisoned_block();
    assert!(unsafe { memory.bytes(block, 2 * PAGE as usize) }
        .iter()
        .all(|&b| b == 0xAA));
    // Clean reuse: nothing reported.
    let again = allocator.alloc(2, 1, NONE).unwrap();
    assert_eq!((again, allocator.stats().misuse_reports), (block, 0));
    allocator.free(again).unwrap();
    // A stale pointer writes into the second page after the free.
    let stale = unsafe { memory.bytes(block + PAGE, 8) };
    stale[3] = 1;
    let reused = allocator.alloc(2, 1, AllocFlags::ZERO).unwrap();
    assert_eq!(reused, block);
    assert_eq!(allocator.stats().misuse_reports, 1);
    assert!(
        unsafe { memory.bytes(reused, 2 * PAGE as usize) }
            .iter()
            .all(|&b| b == 0),
        "ZERO still zero-fills"
    );
}

#[test]
fn the_check_finds_a_write_after_free_before_the_page_comes_back() {
    let (memory, allocator, block) = a_poisoned_block();
    let stale = unsafe { memory.bytes(block + PAGE, 8) };
    stale[5] = 0;
    assert_eq!(allocator.check(), Err(PageStatus::ECORRUPT));
    assert_eq!(allocator.stats().misuse_reports, 1);
    // The check changed nothing: the allocation still reports the page.
    assert_eq!(allocator.alloc(2, 1, NONE), Ok(block));
    assert_eq!(allocator.stats().misuse_reports, 2);
    assert!(allocator.check().is_ok(), "the page is in use now");
}

#[test]
fn scheduled_failures_fail_allocations_then_stop() {
    let (_memory, allocator) = one_region(64);
    allocator.fail_after(2);
    assert!(allocator.alloc(1, 1, NONE).is_ok());
    assert!(allocator.alloc(1, 1, NONE).is_ok());
    assert_eq!(allocator.alloc(1, 1, NONE), Err(PageStatus::ENOMEM));
    assert_eq!(allocator.alloc(1, 1, NONE), Err(PageStatus::ENOMEM));
    allocator.fail_off();
    allocator.fail_every(3).unwrap();
    let results: Vec<bool> = (0..6).map(|_| allocator.alloc(1, 1, NONE).is_ok()).collect();
    assert_eq!(results, [true, true, false, true, true, false]);
    allocator.fail_off();
    assert!(allocator.alloc(1, 1, NONE).is_ok());
    assert_eq!(allocator.fail_every(0), Err(PageStatus::EINVAL));
    let stats = allocator.stats();
    assert_eq!((stats.failed_allocs, stats.misuse_reports, stats.used_pages), (4, 1, 7));
    assert!(allocator.check().is_ok());
}

#[test]
fn the_two_failure_rules_combine() {
    let (_memory, allocator) = one_region(64);
    allocator.fail_every(2).unwrap();
    allocator.fail_after(3);
    // Every second attempt fails, and after three attempts all do.
    let results: Vec<bool> = (0..6).map(|_| allocator.alloc(1, 1, NONE).is_ok()).collect();
    assert_eq!(results, [true, false, true, false, false, false]);
    allocator.fail_off();
    assert!(allocator.alloc(1, 1, NONE).is_ok());
    assert_eq!(allocator.stats().failed_allocs, 4);
    assert!(allocator.check().is_ok());
}

#[test]
fn a_leak_is_reported_with_its_rust_allocation_site() {
    let (_memory, allocator) = one_region_with_debug(64, DebugFlags::TRACK);
    let freed = allocator.alloc(1, 1, NONE).unwrap();
    let leaked_line = line!() + 1;
    let leaked = allocator.alloc(3, 1, NONE).unwrap();
    allocator.get(leaked).unwrap();
    allocator.free(freed).unwrap();
    let mut live = Vec::new();
    allocator.for_each_live(|block| live.push(*block));
    assert_eq!(live.len(), 1);
    let block = live[0];
    assert_eq!((block.pa, block.pages, block.refcount), (leaked, 3, 2));
    assert!(std::str::from_utf8(block.tag.text()).unwrap().ends_with("allocator.rs"));
    assert_eq!(block.tag.line(), leaked_line);
}

#[test]
fn the_pages_of_a_split_block_keep_its_allocation_site() {
    let (_memory, allocator) = one_region_with_debug(64, DebugFlags::TRACK);
    // An earlier block's sites are left where the split block will lie.
    let earlier = allocator.alloc(3, 1, NONE).unwrap();
    allocator.split(earlier).unwrap();
    for page in 0..3 {
        allocator.free(earlier + page * PAGE).unwrap();
    }
    let line = line!() + 1;
    let block = allocator.alloc(3, 1, NONE).unwrap();
    assert_eq!(block, earlier);
    allocator.split(block).unwrap();
    let mut live = Vec::new();
    allocator.for_each_live(|b| live.push(*b));
    assert_eq!(live.len(), 3);
    for (page, block) in live.iter().enumerate() {
        assert_eq!(block.pages, 1, "page {page}");
        assert_eq!(block.tag.line(), line, "page {page}");
    }
}

#[test]
fn without_tracking_live_blocks_have_no_site() {
    let (_memory, allocator) = one_region(64);
    let block = allocator.alloc(2, 1, NONE).unwrap();
    let mut live = Vec::new();
    allocator.for_each_live(|b| live.push(*b));
    assert_eq!(live.len(), 1);
    assert_eq!((live[0].pa, live[0].tag), (block, kpalloc::Tag::NONE));
}

#[test]
fn the_dump_lists_every_page_state_run_length_encoded() {
    let (memory, allocator) = one_region(128);
    let a = allocator.alloc(4, 1, NONE).unwrap();
    let b = allocator.alloc(2, 1, NONE).unwrap();
    allocator.get(b).unwrap();
    let c = allocator.alloc(1, 1, NONE).unwrap();
    allocator.free(a).unwrap();
    let _ = c;
    let needed = allocator.dump(&mut []);
    let mut buffer = vec![0u8; needed + 1];
    assert_eq!(allocator.dump(&mut buffer), needed);
    let text = std::str::from_utf8(&buffer[..needed]).unwrap();
    let expected = format!(
        "kpalloc-dump 1\nstats total=128 free=124 used=3 metadata=1 regions=1 largest_free_run=120\n\
         region start=0x{:x} end=0x{:x} pool=kernel\nruns M1 F4 S2 U1 F120\nend\n",
        memory.pa(0).as_u64(),
        memory.pa(128).as_u64()
    );
    assert_eq!(text, expected);
    // A short buffer gets a NUL-terminated prefix and the full length.
    let mut short = [0xFFu8; 10];
    assert_eq!(allocator.dump(&mut short), needed);
    assert_eq!(&short, b"kpalloc-d\0");
}
