//! The allocator instance, through its Rust API: behaviour as specified.

mod common;

use common::{TestMemory, PAGE};
use kpalloc::{AllocFlags, PageStatus, Pool};

const NONE: AllocFlags = AllocFlags::NONE;

fn one_region(pages: u64) -> (TestMemory, kpalloc::Allocator) {
    let memory = TestMemory::new(0x10_0000, pages);
    let allocator = memory.allocator();
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
fn many_regions_need_no_fixed_table() {
    let memory = TestMemory::new(0x10_0000, 20 * 40);
    let allocator = memory.allocator();
    for i in 0..40 {
        memory.add(&allocator, i * 20, i * 20 + 20, Pool::Kernel).unwrap();
    }
    assert_eq!(allocator.stats().regions, 40);
    let mut blocks = Vec::new();
    while let Ok(pa) = allocator.alloc(1, 1, NONE) {
        blocks.push(pa);
    }
    assert_eq!(blocks.len() as u64, allocator.stats().used_pages);
    for pa in blocks {
        allocator.free(pa).unwrap();
    }
    assert!(allocator.check().is_ok());
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
    assert_eq!(allocator.alloc(1 << 40, 1, NONE), Err(PageStatus::ENOMEM));
    assert_eq!(allocator.alloc(1, 1 << 62, NONE), Err(PageStatus::ENOMEM));
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
#[cfg_attr(miri, ignore = "needs a kernel virtual address above 4 GiB")]
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
