//! Per-CPU caches of single free pages, through the Rust API: a cached page
//! counts as free and every call refuses it as it refuses a free page;
//! multi-page, aligned and DMA32 requests, debug checks and scheduled
//! failures go around the caches; exhaustion and `alloc_at` take cached
//! pages back; CPUs race each other and share caches.
//!
//! The "CPU" is a thread-local number that each test sets (`on_cpu`); an
//! "interrupt" is a closure that the `irq_save` or `irq_restore` hook runs
//! once, in the middle of an allocator call on the same thread.

#[path = "common/churn.rs"]
mod churn;
mod common;

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::ops::Range;
use std::rc::Rc;

use churn::{Churn, Request};
use common::{TestMemory, PAGE};
use kpalloc::types::KPALLOC_MAX_CPUS;
use kpalloc::{AllocFlags, Allocator, Config, CpuCaches, DebugFlags, Hooks, PageStats, PageStatus, Pool};
use x86_64::PhysAddr;

const NONE: AllocFlags = AllocFlags::NONE;
/// Pages one magazine (one CPU, one pool) holds.
const MAGAZINE_PAGES: u64 = 32;
/// Pages a refill takes from the bitmaps, and a flush gives back, at once.
const BATCH_PAGES: u64 = 16;

thread_local! {
    /// The CPU this thread runs on, as `TestHooks::cpu_id` reports it.
    static CPU: Cell<usize> = const { Cell::new(0) };
    /// Run once by the next `irq_save` on this thread: an interrupt that
    /// lands inside the allocator, just before it takes its lock.
    static INTERRUPT: RefCell<Option<Box<dyn FnOnce()>>> = const { RefCell::new(None) };
    /// Run once by the next `irq_restore` on this thread: an interrupt that
    /// was held off while the allocator held its lock.
    static INTERRUPT_ON_RESTORE: RefCell<Option<Box<dyn FnOnce()>>> = const { RefCell::new(None) };
    /// The last refusal reported through `on_misuse` on this thread.
    static LAST_MISUSE: Cell<Option<(PageStatus, usize)>> = const { Cell::new(None) };
}

fn on_cpu(cpu: usize) {
    CPU.with(|current| current.set(cpu));
}

/// Runs `interrupt` inside the next `irq_save` on this thread.
fn interrupt_next_lock(interrupt: impl FnOnce() + 'static) {
    INTERRUPT.with(|slot| *slot.borrow_mut() = Some(Box::new(interrupt)));
}

/// Runs `interrupt` inside the next `irq_restore` on this thread, just
/// after the allocator released its lock.
fn interrupt_after_next_unlock(interrupt: impl FnOnce() + 'static) {
    INTERRUPT_ON_RESTORE.with(|slot| *slot.borrow_mut() = Some(Box::new(interrupt)));
}

fn last_misuse() -> Option<(PageStatus, usize)> {
    LAST_MISUSE.with(Cell::get)
}

struct TestHooks;

impl Hooks for TestHooks {
    fn cpu_id(&self) -> usize {
        CPU.with(Cell::get)
    }

    fn irq_save(&self) -> u64 {
        // Taken out first: the interrupt may call the allocator again.
        if let Some(interrupt) = INTERRUPT.with(|slot| slot.borrow_mut().take()) {
            interrupt();
        }
        0
    }

    fn irq_restore(&self, _saved: u64) {
        if let Some(interrupt) = INTERRUPT_ON_RESTORE.with(|slot| slot.borrow_mut().take()) {
            interrupt();
        }
    }

    fn on_misuse(&self, status: PageStatus, addr: usize) {
        LAST_MISUSE.with(|last| last.set(Some((status, addr))));
    }
}

type CachedAllocator = Allocator<TestHooks>;

/// An allocator with caches of its own over `memory`, leaked like the
/// memory (interrupts need a `'static` allocator to call).
fn allocator_with_debug(memory: &TestMemory, debug: DebugFlags) -> &'static CachedAllocator {
    let caches: &'static CpuCaches = Box::leak(Box::new(CpuCaches::new()));
    let config = Config {
        phys_offset: memory.phys_offset,
        debug,
    };
    Box::leak(Box::new(Allocator::with_cpu_caches(config, TestHooks, caches)))
}

/// One kernel region of `pages` pages, the first of them metadata; this
/// thread on CPU 0.
fn one_region(pages: u64) -> (TestMemory, &'static CachedAllocator) {
    let memory = TestMemory::new(0x10_0000, pages);
    let allocator = allocator_with_debug(&memory, DebugFlags::NONE);
    memory.add(allocator, 0, pages, Pool::Kernel).unwrap();
    assert_eq!(allocator.stats().metadata_pages, 1);
    on_cpu(0);
    (memory, allocator)
}

/// The page number of `pa` in `memory`.
fn index(memory: &TestMemory, pa: PhysAddr) -> u64 {
    (pa.as_u64() - memory.phys_base) / PAGE
}

fn is_in(memory: &TestMemory, pa: PhysAddr, pages: Range<u64>) -> bool {
    pages.contains(&index(memory, pa))
}

/// `before`, with one more misuse report.
fn one_more_misuse(before: PageStats) -> PageStats {
    PageStats {
        misuse_reports: before.misuse_reports + 1,
        ..before
    }
}

/// Every page is free, used or metadata, and cached pages are free ones.
fn assert_accounted(stats: &PageStats) {
    assert_eq!(
        stats.free_pages + stats.used_pages + stats.metadata_pages,
        stats.total_pages,
        "{stats:?}"
    );
    assert!(stats.cached_pages <= stats.free_pages, "{stats:?}");
}

fn live_blocks(allocator: &CachedAllocator) -> usize {
    let mut blocks = 0;
    allocator.for_each_live(|_| blocks += 1);
    blocks
}

#[test]
fn a_freed_single_page_stays_cached_and_its_cpu_gets_it_back_first() {
    let (memory, allocator) = one_region(128);
    let fresh = allocator.stats();
    assert_eq!((fresh.free_pages, fresh.used_pages, fresh.cached_pages), (127, 0, 0));

    let page = allocator.alloc(1, 1, NONE).unwrap();
    assert!(
        is_in(&memory, page, 1..1 + BATCH_PAGES),
        "one of the lowest free pages, refilled from the bitmap"
    );
    let stats = allocator.stats();
    assert_eq!(
        (stats.free_pages, stats.used_pages, stats.cached_pages),
        (fresh.free_pages - 1, 1, BATCH_PAGES - 1)
    );

    allocator.free(page).unwrap();
    let stats = allocator.stats();
    assert_eq!(stats.cached_pages, BATCH_PAGES);
    assert_eq!(stats.free_pages, fresh.free_pages, "cached pages count as free");
    assert_eq!(stats.used_pages, 0);
    assert_eq!(stats.high_water_pages, BATCH_PAGES, "cached pages count as in use here");
    assert_eq!((allocator.refcount(page), allocator.block_pages(page)), (0, 0));
    assert_eq!(live_blocks(allocator), 0);
    assert_eq!(allocator.check(), Ok(()));

    assert_eq!(allocator.alloc(1, 1, NONE), Ok(page), "last in, first out");
    allocator.free(page).unwrap();

    on_cpu(1);
    let other = allocator.alloc(1, 1, NONE).unwrap();
    assert!(
        is_in(&memory, other, 1 + BATCH_PAGES..1 + 2 * BATCH_PAGES),
        "CPU 1 refills from the bitmap, past CPU 0's pages: got page {}",
        index(&memory, other)
    );
    let stats = allocator.stats();
    assert_eq!(
        (stats.free_pages, stats.used_pages, stats.cached_pages),
        (fresh.free_pages - 1, 1, 2 * BATCH_PAGES - 1)
    );
    allocator.free(other).unwrap();
    assert_eq!(allocator.alloc(1, 1, NONE), Ok(other));
    allocator.free(other).unwrap();

    on_cpu(0);
    assert_eq!(allocator.alloc(1, 1, NONE), Ok(page), "CPU 0's cache kept its order");
    allocator.free(page).unwrap();
    let stats = allocator.stats();
    assert_eq!(
        (stats.free_pages, stats.used_pages, stats.cached_pages),
        (fresh.free_pages, 0, 2 * BATCH_PAGES)
    );
    assert_eq!(stats.misuse_reports, 0);
    assert_eq!(allocator.check(), Ok(()));
}

#[test]
fn the_last_page_of_a_region_is_cached_as_any_other() {
    // 128 pages: the region ends with a bitmap word, and the slot a cached
    // free reads the block's length from is the one past the bitmap.
    let (memory, allocator) = one_region(128);
    let last = memory.pa(127);
    assert_eq!(allocator.alloc_at(last, 1, NONE), Ok(()));
    let before = allocator.stats();
    assert_eq!(allocator.free(last), Ok(()));
    let stats = allocator.stats();
    assert_eq!(stats.cached_pages, before.cached_pages + 1);
    assert_eq!((stats.free_pages, stats.used_pages), (before.free_pages + 1, 0));
    assert_eq!(allocator.check(), Ok(()));
    assert_eq!(allocator.free(last), Err(PageStatus::ENOTALLOCATED));
    assert_eq!(allocator.stats(), one_more_misuse(stats));
    assert_eq!(allocator.alloc(1, 1, NONE), Ok(last), "last in, first out");
    assert_eq!(allocator.free_sized(last, 2), Err(PageStatus::EINVAL));
    assert_eq!(allocator.free_sized(last, 1), Ok(()));
    assert_eq!(allocator.check(), Ok(()));
}

#[test]
fn a_refill_takes_what_is_free_and_another_cpu_takes_it_back_when_nothing_else_is() {
    // One usable page.
    let (memory, allocator) = one_region(2);
    let page = allocator.alloc(1, 1, NONE).unwrap();
    assert_eq!(page, memory.pa(1));
    allocator.free(page).unwrap();
    let stats = allocator.stats();
    assert_eq!((stats.free_pages, stats.used_pages, stats.cached_pages), (1, 0, 1));
    assert_eq!(allocator.check(), Ok(()));

    on_cpu(1);
    assert_eq!(allocator.alloc(1, 1, NONE), Ok(page), "drained from CPU 0's cache");
    let stats = allocator.stats();
    assert_eq!(
        (
            stats.free_pages,
            stats.used_pages,
            stats.cached_pages,
            stats.failed_allocs
        ),
        (0, 1, 0, 0)
    );
    assert_eq!(allocator.alloc(1, 1, NONE), Err(PageStatus::ENOMEM));
    assert_eq!(allocator.stats().failed_allocs, 1);
    allocator.free(page).unwrap();
    assert_eq!(allocator.stats().cached_pages, 1);
    assert_eq!(allocator.check(), Ok(()));
}

#[test]
fn every_call_on_a_cached_page_is_refused_as_on_a_free_page_and_changes_nothing() {
    let (_memory, allocator) = one_region(64);
    let page = allocator.alloc(1, 1, NONE).unwrap();
    allocator.free(page).unwrap();
    assert_eq!(allocator.stats().cached_pages, BATCH_PAGES);
    type Call = fn(&CachedAllocator, PhysAddr) -> Result<(), PageStatus>;
    let calls: [(&str, Call); 6] = [
        ("free", |a, pa| a.free(pa)),
        ("free_sized 1", |a, pa| a.free_sized(pa, 1)),
        ("free_sized 2", |a, pa| a.free_sized(pa, 2)),
        ("get", |a, pa| a.get(pa)),
        ("put", |a, pa| a.put(pa)),
        ("split", |a, pa| a.split(pa)),
    ];
    // CPU 0 holds the page in its cache; CPU 1's cache is empty.
    for cpu in [0, 1] {
        on_cpu(cpu);
        for (name, call) in calls {
            let before = allocator.stats();
            LAST_MISUSE.with(|last| last.set(None));
            assert_eq!(
                call(allocator, page),
                Err(PageStatus::ENOTALLOCATED),
                "{name} on CPU {cpu}"
            );
            assert_eq!(allocator.stats(), one_more_misuse(before), "{name} on CPU {cpu}");
            assert_eq!(
                last_misuse(),
                Some((PageStatus::ENOTALLOCATED, allocator.kva(page))),
                "{name} on CPU {cpu}"
            );
            assert_eq!((allocator.refcount(page), allocator.block_pages(page)), (0, 0));
            assert_eq!(allocator.check(), Ok(()), "{name} on CPU {cpu}");
        }
    }
    on_cpu(0);
    assert_eq!(allocator.alloc(1, 1, NONE), Ok(page), "still on top of CPU 0's cache");
    assert_eq!((allocator.refcount(page), allocator.block_pages(page)), (1, 1));
    let stats = allocator.stats();
    assert_eq!((stats.used_pages, stats.misuse_reports), (1, 12));
}

#[test]
fn a_shared_single_page_is_not_freed_and_its_last_put_caches_it() {
    let (_memory, allocator) = one_region(64);
    let fresh = allocator.stats();
    let page = allocator.alloc(1, 1, NONE).unwrap();
    allocator.get(page).unwrap();
    assert_eq!(allocator.refcount(page), 2);

    assert_eq!(allocator.free(page), Err(PageStatus::ESHARED));
    assert_eq!(allocator.free_sized(page, 1), Err(PageStatus::ESHARED));
    let stats = allocator.stats();
    assert_eq!(
        (stats.used_pages, stats.cached_pages, stats.misuse_reports),
        (1, BATCH_PAGES - 1, 2)
    );
    assert_eq!(allocator.refcount(page), 2);
    assert_eq!(allocator.check(), Ok(()));

    allocator.put(page).unwrap();
    assert_eq!(allocator.refcount(page), 1);
    let stats = allocator.stats();
    assert_eq!((stats.used_pages, stats.cached_pages), (1, BATCH_PAGES - 1));

    // The last put, on another CPU, caches the page there.
    on_cpu(1);
    allocator.put(page).unwrap();
    let stats = allocator.stats();
    assert_eq!(
        (stats.free_pages, stats.used_pages, stats.cached_pages),
        (fresh.free_pages, 0, BATCH_PAGES)
    );
    assert_eq!((allocator.refcount(page), allocator.block_pages(page)), (0, 0));
    assert_eq!(allocator.get(page), Err(PageStatus::ENOTALLOCATED));
    assert_eq!(allocator.put(page), Err(PageStatus::ENOTALLOCATED));
    assert_eq!(allocator.check(), Ok(()));
    assert_eq!(allocator.alloc(1, 1, NONE), Ok(page), "from CPU 1's cache");
    assert_eq!(allocator.stats().cached_pages, BATCH_PAGES - 1);
}

#[test]
fn multi_page_aligned_and_dma32_requests_come_from_the_bitmap_lowest_first_when_no_block_is_cached() {
    let (memory, allocator) = one_region(128);
    let single = allocator.alloc(1, 1, NONE).unwrap();
    // CPU 0's cache holds the rest of pages 1..=16.
    assert!(is_in(&memory, single, 1..17));
    let cached = allocator.stats().cached_pages;
    assert_eq!(cached, BATCH_PAGES - 1);

    let two = allocator.alloc(2, 1, NONE).unwrap();
    assert_eq!(two, memory.pa(17));
    // Physical page numbers: the memory starts at frame 256, so page k is
    // frame 256 + k, and an alignment of 2 wants an even k.
    let aligned = allocator.alloc(1, 2, NONE).unwrap();
    assert_eq!(aligned, memory.pa(20));
    let dma = allocator.alloc(1, 1, AllocFlags::DMA32).unwrap();
    assert_eq!(dma, memory.pa(19));
    let four = allocator.alloc(4, 4, NONE).unwrap();
    assert_eq!(four, memory.pa(24));
    let stats = allocator.stats();
    assert_eq!((stats.used_pages, stats.cached_pages), (1 + 2 + 1 + 1 + 4, cached));
    assert_eq!(allocator.block_pages(two), 2);
    assert_eq!(allocator.check(), Ok(()));

    // A wrong length is refused before the cache is considered.
    let before = allocator.stats();
    assert_eq!(allocator.free_sized(two, 1), Err(PageStatus::EINVAL));
    assert_eq!(allocator.stats(), one_more_misuse(before));
    assert_eq!((allocator.refcount(two), allocator.block_pages(two)), (1, 2));
    assert_eq!(allocator.check(), Ok(()));

    // A block not aligned to its length goes back to the bitmap; one
    // aligned to it, to a cache.
    allocator.free_sized(two, 2).unwrap();
    assert_eq!(allocator.stats().cached_pages, cached);
    assert_eq!(allocator.alloc(2, 1, NONE), Ok(memory.pa(17)));
    allocator.free(four).unwrap();
    assert_eq!(allocator.stats().cached_pages, cached + 4);

    // A single page is a single page however it was allocated.
    allocator.free(aligned).unwrap();
    allocator.free(dma).unwrap();
    assert_eq!(allocator.stats().cached_pages, cached + 6);
    assert_eq!(allocator.alloc(1, 1, NONE), Ok(dma));
    assert_eq!(allocator.alloc(1, 1, NONE), Ok(aligned));
    assert_eq!(allocator.alloc(4, 2, NONE), Ok(four));
    assert_eq!(allocator.stats().cached_pages, cached);
    assert_eq!(allocator.check(), Ok(()));
}

#[test]
fn blocks_of_2_4_and_8_pages_aligned_to_their_length_are_cached_by_length() {
    let (memory, allocator) = one_region(256);
    let fresh = allocator.stats();
    // From the bitmap, lowest first (page 0 holds the metadata). Only the
    // first three have a length the caches hold.
    let eight = allocator.alloc(8, 8, NONE).unwrap();
    let four = allocator.alloc(4, 4, NONE).unwrap();
    let two = allocator.alloc(2, 2, NONE).unwrap();
    let three = allocator.alloc(3, 8, NONE).unwrap();
    let sixteen = allocator.alloc(16, 16, NONE).unwrap();
    assert_eq!(
        [eight, four, two, three, sixteen].map(|pa| index(&memory, pa)),
        [8, 4, 2, 16, 32]
    );
    for (pa, cached, used) in [
        (eight, 8, 25),
        (four, 12, 21),
        (two, 14, 19),
        (three, 14, 16),
        (sixteen, 14, 0),
    ] {
        allocator.free(pa).unwrap();
        let stats = allocator.stats();
        assert_eq!((stats.cached_pages, stats.used_pages), (cached, used), "{stats:?}");
        assert_accounted(&stats);
        assert_eq!(allocator.check(), Ok(()));
    }
    assert_eq!(allocator.stats().used_pages, 0);

    // Every page of a cached block is refused as a free page is.
    for pa in [eight, memory.pa(13), two, memory.pa(3)] {
        for (name, call) in [
            (
                "free",
                CachedAllocator::free as fn(&CachedAllocator, PhysAddr) -> Result<(), PageStatus>,
            ),
            ("get", CachedAllocator::get),
            ("put", CachedAllocator::put),
            ("split", CachedAllocator::split),
        ] {
            let before = allocator.stats();
            assert_eq!(call(allocator, pa), Err(PageStatus::ENOTALLOCATED), "{name} {pa:?}");
            assert_eq!(allocator.stats(), one_more_misuse(before), "{name} {pa:?}");
            assert_eq!((allocator.refcount(pa), allocator.block_pages(pa)), (0, 0));
        }
        let before = allocator.stats();
        assert_eq!(allocator.free_sized(pa, 8), Err(PageStatus::ENOTALLOCATED));
        assert_eq!(allocator.stats(), one_more_misuse(before));
    }
    assert_eq!(allocator.check(), Ok(()));

    // Another CPU's cache holds none of them: its blocks come from the
    // bitmap, lowest first.
    on_cpu(1);
    assert_eq!(allocator.alloc(8, 8, NONE), Ok(memory.pa(16)));
    allocator.free(memory.pa(16)).unwrap();
    on_cpu(0);
    // A cached block serves any alignment up to its length, and nothing
    // else: no other length, no larger alignment, not DMA32.
    assert_eq!(allocator.alloc(8, 16, NONE), Ok(memory.pa(32)));
    assert_eq!(allocator.alloc(8, 1, NONE), Ok(eight));
    assert_eq!(allocator.alloc(2, 1, AllocFlags::DMA32), Ok(memory.pa(24)));
    assert_eq!(allocator.alloc(4, 2, NONE), Ok(four));
    assert_eq!(allocator.alloc(2, 2, NONE), Ok(two));
    assert_eq!([eight, four, two].map(|pa| allocator.refcount(pa)), [1; 3]);
    assert_eq!([eight, four, two].map(|pa| allocator.block_pages(pa)), [8, 4, 2]);
    let stats = allocator.stats();
    assert_eq!(
        (stats.cached_pages, stats.used_pages),
        (8, 8 + 8 + 4 + 2 + 2),
        "CPU 1's block stays cached"
    );
    assert_eq!(allocator.check(), Ok(()));

    // Sizes can be wrong only the locked way: refused, nothing cached.
    let before = allocator.stats();
    assert_eq!(allocator.free_sized(four, 2), Err(PageStatus::EINVAL));
    assert_eq!(allocator.stats(), one_more_misuse(before));
    for pa in [eight, four, two, memory.pa(32), memory.pa(24)] {
        allocator.free(pa).unwrap();
    }
    // Draining gives back every page of every block.
    let cached = allocator.stats().cached_pages;
    assert_eq!(cached, 8 + 8 + 4 + 2 + 8 + 2, "CPU 1's, and every block freed on CPU 0");
    assert_eq!(allocator.drain_caches() as u64, cached);
    let stats = allocator.stats();
    assert_eq!(
        (stats.cached_pages, stats.free_pages, stats.largest_free_run),
        (0, fresh.free_pages, fresh.free_pages)
    );
    assert_eq!(allocator.check(), Ok(()));
}

#[test]
fn an_alignment_that_is_not_a_power_of_two_is_refused_with_blocks_cached() {
    let (_memory, allocator) = one_region(64);
    let four = allocator.alloc(4, 4, NONE).unwrap();
    let two = allocator.alloc(2, 2, NONE).unwrap();
    allocator.free(four).unwrap();
    allocator.free(two).unwrap();
    for (count, align) in [(4, 3), (4, 0), (2, 0), (1, 0)] {
        let before = allocator.stats();
        assert_eq!(
            allocator.alloc(count, align, NONE),
            Err(PageStatus::EINVAL),
            "{count} {align}"
        );
        assert_eq!(allocator.stats(), one_more_misuse(before), "{count} {align}");
    }
    assert_eq!(allocator.alloc(4, 4, NONE), Ok(four));
    assert_eq!(allocator.alloc(2, 1, NONE), Ok(two));
    assert_eq!(allocator.check(), Ok(()));
}

#[test]
fn a_full_block_magazine_flushes_its_oldest_half() {
    let (memory, allocator) = one_region(128);
    let blocks: Vec<PhysAddr> = (0..9).map(|_| allocator.alloc(2, 2, NONE).unwrap()).collect();
    for (freed, &pa) in blocks.iter().enumerate() {
        allocator.free(pa).unwrap();
        // Eight fit; the ninth flushes the four oldest first.
        let held = if freed < 8 { freed + 1 } else { 5 };
        assert_eq!(allocator.stats().cached_pages, 2 * held as u64);
        assert_eq!(allocator.check(), Ok(()));
    }
    // The flushed blocks are free in the bitmap: the lowest comes first.
    assert_eq!(allocator.alloc(2, 2, AllocFlags::DMA32), Ok(blocks[0]));
    assert_eq!(index(&memory, blocks[0]), 2);
    // The cached ones come most recently freed first.
    for &pa in blocks[4..].iter().rev() {
        assert_eq!(allocator.alloc(2, 1, NONE), Ok(pa));
    }
    assert_eq!(allocator.stats().cached_pages, 0);
}

#[test]
fn alloc_at_takes_blocks_back_from_the_caches() {
    let (memory, allocator) = one_region(64);
    let eight = allocator.alloc(8, 8, NONE).unwrap();
    allocator.free(eight).unwrap();
    assert_eq!(allocator.stats().cached_pages, 8);
    // Over the cached block's last pages and the free ones after it.
    let at = memory.pa(index(&memory, eight) + 6);
    assert_eq!(allocator.alloc_at(at, 4, NONE), Ok(()));
    let stats = allocator.stats();
    assert_eq!((stats.cached_pages, stats.used_pages), (0, 4));
    assert_eq!(
        allocator.alloc(8, 8, NONE),
        Ok(memory.pa(24)),
        "the drained block lost its end"
    );
    assert_eq!(allocator.check(), Ok(()));
}

#[test]
fn kernel_and_user_pages_are_cached_apart() {
    let memory = TestMemory::new(0x10_0000, 128);
    let allocator = allocator_with_debug(&memory, DebugFlags::NONE);
    memory.add(allocator, 0, 64, Pool::Kernel).unwrap();
    memory.add(allocator, 64, 128, Pool::User).unwrap();
    on_cpu(0);
    let fresh = allocator.stats();
    assert_eq!((fresh.free_pages, fresh.user_free_pages), (126, 63));

    let kernel = allocator.alloc(1, 1, NONE).unwrap();
    let user = allocator.alloc(1, 1, AllocFlags::USER).unwrap();
    assert!(is_in(&memory, kernel, 1..64));
    assert!(is_in(&memory, user, 65..128));
    let stats = allocator.stats();
    assert_eq!(
        (stats.used_pages, stats.cached_pages, stats.user_free_pages),
        (2, 2 * (BATCH_PAGES - 1), 62)
    );

    allocator.free(user).unwrap();
    allocator.free(kernel).unwrap();
    let stats = allocator.stats();
    assert_eq!(
        (
            stats.free_pages,
            stats.used_pages,
            stats.cached_pages,
            stats.user_free_pages
        ),
        (fresh.free_pages, 0, 2 * BATCH_PAGES, fresh.user_free_pages)
    );
    assert_eq!(allocator.check(), Ok(()));
    assert_eq!(allocator.alloc(1, 1, AllocFlags::USER), Ok(user));
    assert_eq!(allocator.alloc(1, 1, NONE), Ok(kernel));
    allocator.free(kernel).unwrap();
    allocator.free(user).unwrap();
    assert_eq!(allocator.stats().used_pages, 0);
}

#[test]
fn pages_parked_in_other_cpus_caches_are_taken_back_when_the_bitmap_runs_out() {
    let (memory, allocator) = one_region(64);
    let fresh = allocator.stats();
    let pages: Vec<PhysAddr> = (0..fresh.free_pages)
        .map(|_| allocator.alloc(1, 1, NONE).unwrap())
        .collect();
    let distinct: BTreeSet<_> = pages.iter().map(|&pa| index(&memory, pa)).collect();
    assert_eq!(distinct, (1..64).collect());
    let full = allocator.stats();
    assert_eq!((full.free_pages, full.used_pages, full.cached_pages), (0, 63, 0));
    assert_eq!(allocator.alloc(1, 1, NONE), Err(PageStatus::ENOMEM));
    assert_eq!(allocator.stats().failed_allocs, full.failed_allocs + 1);

    for (i, &page) in pages.iter().enumerate() {
        on_cpu(1 + i % 4);
        allocator.free(page).unwrap();
    }
    let parked = allocator.stats();
    assert_eq!(
        (parked.free_pages, parked.used_pages, parked.cached_pages),
        (fresh.free_pages, 0, fresh.free_pages)
    );
    assert_eq!(allocator.check(), Ok(()));

    on_cpu(0);
    let block = allocator.alloc(8, 1, NONE).unwrap();
    assert_eq!(block, memory.pa(1), "every cache drained, then first fit");
    let stats = allocator.stats();
    assert_eq!(
        (stats.free_pages, stats.used_pages, stats.cached_pages),
        (fresh.free_pages - 8, 8, 0)
    );
    assert_eq!(stats.largest_free_run, fresh.free_pages - 8);
    assert_eq!(stats.failed_allocs, parked.failed_allocs, "a drain is no failure");
    assert_accounted(&stats);
    assert_eq!(allocator.check(), Ok(()));

    // The rest, one page at a time, then every request fails.
    let rest: Vec<PhysAddr> = (0..stats.free_pages)
        .map(|_| allocator.alloc(1, 1, NONE).unwrap())
        .collect();
    let stats = allocator.stats();
    assert_eq!(
        (stats.free_pages, stats.used_pages, stats.cached_pages),
        (0, fresh.free_pages, 0)
    );
    for (cpu, count) in [(0, 1), (0, 1), (1, 1), (2, 8), (3, 2)] {
        on_cpu(cpu);
        let before = allocator.stats();
        assert_eq!(allocator.alloc(count, 1, NONE), Err(PageStatus::ENOMEM));
        let after = allocator.stats();
        assert_eq!(
            after,
            PageStats {
                failed_allocs: before.failed_allocs + 1,
                ..before
            },
            "{count} pages on CPU {cpu}: one failure, nothing else"
        );
    }

    allocator.free(block).unwrap();
    for page in rest {
        allocator.free(page).unwrap();
    }
    let stats = allocator.stats();
    assert_eq!((stats.free_pages, stats.used_pages), (fresh.free_pages, 0));
    assert_eq!(stats.misuse_reports, 0);
    assert_eq!(allocator.check(), Ok(()));
}

#[test]
fn a_request_that_fails_even_after_draining_counts_one_failure() {
    let (memory, allocator) = one_region(64);
    let pages: Vec<PhysAddr> = std::iter::from_fn(|| allocator.alloc(1, 1, NONE).ok()).collect();
    assert_eq!(pages.len(), 63);
    // Every other page, from CPUs 1 to 3: no two free pages are adjacent.
    let mut kept = Vec::new();
    for (i, &page) in pages.iter().enumerate() {
        if index(&memory, page) % 2 == 0 {
            on_cpu(1 + i % 3);
            allocator.free(page).unwrap();
        } else {
            kept.push(page);
        }
    }
    let before = allocator.stats();
    assert_eq!((before.free_pages, before.cached_pages), (31, 31));

    on_cpu(0);
    assert_eq!(allocator.alloc(2, 1, NONE), Err(PageStatus::ENOMEM));
    let after = allocator.stats();
    assert_eq!(after.failed_allocs, before.failed_allocs + 1);
    assert_eq!(
        (
            after.free_pages,
            after.used_pages,
            after.cached_pages,
            after.largest_free_run
        ),
        (31, 32, 0, 1),
        "drained into the bitmap, and nothing else"
    );
    assert_eq!(after.misuse_reports, 0);
    assert_eq!(allocator.check(), Ok(()));
    for page in kept {
        allocator.free(page).unwrap();
    }
    assert_eq!(allocator.alloc(2, 1, NONE), Ok(memory.pa(1)));
}

#[test]
fn alloc_at_takes_pages_back_from_the_caches() {
    let (memory, allocator) = one_region(64);
    let fresh = allocator.stats();
    let page = allocator.alloc(1, 1, NONE).unwrap();
    allocator.free(page).unwrap();
    // CPU 0's cache: pages 1..=16. A range over cached and bitmap pages.
    assert_eq!(allocator.alloc_at(memory.pa(12), 8, NONE), Ok(()));
    assert_eq!(
        (allocator.refcount(memory.pa(12)), allocator.block_pages(memory.pa(12))),
        (1, 8)
    );
    let stats = allocator.stats();
    assert_eq!(
        (stats.free_pages, stats.used_pages, stats.cached_pages),
        (fresh.free_pages - 8, 8, 0)
    );
    assert_eq!(allocator.check(), Ok(()));

    // A single page cached on CPU 1, reserved from CPU 0.
    on_cpu(1);
    let cached = allocator.alloc(1, 1, NONE).unwrap();
    allocator.free(cached).unwrap();
    assert_eq!(allocator.stats().cached_pages, BATCH_PAGES);
    on_cpu(0);
    assert_eq!(allocator.alloc_at(cached, 1, NONE), Ok(()));
    assert_eq!((allocator.refcount(cached), allocator.block_pages(cached)), (1, 1));
    let stats = allocator.stats();
    assert_eq!(
        (stats.free_pages, stats.used_pages, stats.cached_pages),
        (fresh.free_pages - 9, 9, 0)
    );
    assert_eq!(allocator.check(), Ok(()));

    // A page in use stays refused, caches or not.
    let page = allocator.alloc(1, 1, NONE).unwrap();
    allocator.free(page).unwrap();
    let before = allocator.stats();
    assert_eq!(allocator.alloc_at(memory.pa(13), 1, NONE), Err(PageStatus::EBUSY));
    let after = allocator.stats();
    assert_eq!(
        (after.free_pages, after.used_pages, after.misuse_reports),
        (before.free_pages, before.used_pages, before.misuse_reports + 1)
    );
    assert_eq!(allocator.block_pages(memory.pa(12)), 8);
    assert_eq!(allocator.check(), Ok(()));

    allocator.free(memory.pa(12)).unwrap();
    allocator.free(cached).unwrap();
    let stats = allocator.stats();
    assert_eq!((stats.free_pages, stats.used_pages), (fresh.free_pages, 0));
}

#[test]
fn a_full_magazine_flushes_to_the_bitmap_and_every_page_stays_accounted_for() {
    let (memory, allocator) = one_region(128);
    let fresh = allocator.stats();
    let pages: Vec<PhysAddr> = (0..40).map(|_| allocator.alloc(1, 1, NONE).unwrap()).collect();
    // Three refills of 16 for 40 pages: 8 left in the cache.
    assert_eq!(allocator.stats().cached_pages, 3 * BATCH_PAGES - 40);
    for (freed, &page) in pages.iter().enumerate() {
        allocator.free(page).unwrap();
        let stats = allocator.stats();
        assert!(stats.cached_pages <= MAGAZINE_PAGES, "{stats:?}");
        assert_eq!(stats.used_pages, 40 - freed as u64 - 1);
        assert_eq!(stats.free_pages, fresh.free_pages - stats.used_pages);
        assert_accounted(&stats);
        // (A check is slow under Miri: after every 8th free there.)
        if !cfg!(miri) || freed % 8 == 7 {
            assert_eq!(allocator.check(), Ok(()), "after {} frees", freed + 1);
        }
    }
    // 8 + 24 fills the magazine; the 25th free flushes 16, then 15 more.
    let stats = allocator.stats();
    assert_eq!(stats.cached_pages, MAGAZINE_PAGES);
    assert!(
        stats.largest_free_run >= fresh.free_pages - 3 * BATCH_PAGES,
        "the pages no refill took are one run: {stats:?}"
    );

    // Each page can be allocated exactly once, from whichever CPU.
    let mut all = BTreeSet::new();
    for i in 0..fresh.free_pages {
        on_cpu(i as usize % 4);
        let page = allocator.alloc(1, 1, NONE).unwrap();
        assert!(
            all.insert(index(&memory, page)),
            "page {} handed out twice",
            index(&memory, page)
        );
    }
    assert_eq!(all, (1..128).collect());
    assert_eq!(allocator.alloc(1, 1, NONE), Err(PageStatus::ENOMEM));
    for &page in &all {
        allocator.free(memory.pa(page)).unwrap();
    }
    let stats = allocator.stats();
    assert_eq!((stats.free_pages, stats.used_pages), (fresh.free_pages, 0));
    assert!(stats.cached_pages <= 4 * MAGAZINE_PAGES);
    assert_eq!(allocator.check(), Ok(()));
}

#[test]
fn a_cached_page_handed_out_with_zero_is_zeroed() {
    let (memory, allocator) = one_region(64);
    let page = allocator.alloc(1, 1, NONE).unwrap();
    // SAFETY: the page is allocated to this test.
    let bytes = unsafe { memory.bytes(page, PAGE as usize) };
    bytes.fill(0x5A);
    allocator.free(page).unwrap();
    assert_eq!(allocator.alloc(1, 1, AllocFlags::ZERO), Ok(page));
    // SAFETY: allocated again, to this test.
    assert!(unsafe { memory.bytes(page, PAGE as usize) }.iter().all(|&b| b == 0));
}

#[test]
fn poisoning_and_tracking_turn_the_caches_off() {
    for debug in [
        DebugFlags::POISON,
        DebugFlags::TRACK,
        DebugFlags::POISON | DebugFlags::TRACK,
    ] {
        let memory = TestMemory::new(0x10_0000, 32);
        let allocator = allocator_with_debug(&memory, debug);
        memory.add(allocator, 0, 32, Pool::Kernel).unwrap();
        on_cpu(0);
        let fresh = allocator.stats();
        let first = allocator.alloc(1, 1, NONE).unwrap();
        let second = allocator.alloc(1, 1, NONE).unwrap();
        assert_eq!((first, second), (memory.pa(1), memory.pa(2)), "debug {debug:?}");
        assert_eq!(allocator.stats().cached_pages, 0, "debug {debug:?}");

        allocator.free(first).unwrap();
        allocator.free(second).unwrap();
        let stats = allocator.stats();
        assert_eq!(
            (
                stats.free_pages,
                stats.used_pages,
                stats.cached_pages,
                stats.largest_free_run
            ),
            (fresh.free_pages, 0, 0, fresh.free_pages),
            "debug {debug:?}"
        );
        assert_eq!(allocator.check(), Ok(()));
        // Lowest first, not the most recently freed.
        assert_eq!(allocator.alloc(1, 1, NONE), Ok(first), "debug {debug:?}");

        if debug.contains(DebugFlags::POISON) {
            // The freed page was poisoned, and a write after free is caught.
            // SAFETY: the page is free; this stands for a stale pointer.
            let stale = unsafe { memory.bytes(second, 8) };
            stale[0] = 1;
            let before = allocator.stats().misuse_reports;
            assert_eq!(allocator.alloc(1, 1, NONE), Ok(second));
            assert_eq!(allocator.stats().misuse_reports, before + 1);
            assert_eq!(
                last_misuse(),
                Some((PageStatus::ECORRUPT, allocator.kva(second))),
                "debug {debug:?}"
            );
            allocator.free(second).unwrap();
        }
        allocator.free(first).unwrap();
        assert_eq!(allocator.stats().cached_pages, 0, "debug {debug:?}");
        assert_eq!(allocator.check(), Ok(()));
    }
}

#[test]
fn scheduled_failures_fail_single_pages_even_with_pages_cached() {
    let (memory, allocator) = one_region(64);
    let page = allocator.alloc(1, 1, NONE).unwrap();
    allocator.free(page).unwrap();
    let before = allocator.stats();
    assert_eq!(before.cached_pages, BATCH_PAGES);

    allocator.fail_after(1);
    let first = allocator.alloc(1, 1, NONE).unwrap();
    assert_eq!(first, memory.pa(17), "from the bitmap: the caches are bypassed");
    for cpu in [0, 1] {
        on_cpu(cpu);
        assert_eq!(allocator.alloc(1, 1, NONE), Err(PageStatus::ENOMEM), "CPU {cpu}");
    }
    on_cpu(0);
    let stats = allocator.stats();
    assert_eq!(stats.failed_allocs, before.failed_allocs + 2);
    assert_eq!((stats.used_pages, stats.cached_pages), (1, BATCH_PAGES));
    // Frees bypass the caches too.
    allocator.free(first).unwrap();
    assert_eq!(allocator.stats().cached_pages, BATCH_PAGES);

    allocator.fail_off();
    allocator.fail_every(2).unwrap();
    let results: Vec<_> = (0..4).map(|_| allocator.alloc(1, 1, NONE)).collect();
    assert_eq!(
        results,
        [
            Ok(memory.pa(17)),
            Err(PageStatus::ENOMEM),
            Ok(memory.pa(18)),
            Err(PageStatus::ENOMEM)
        ]
    );
    let stats = allocator.stats();
    assert_eq!(stats.failed_allocs, before.failed_allocs + 4);
    assert_eq!(stats.cached_pages, BATCH_PAGES);
    assert_eq!(allocator.check(), Ok(()));

    allocator.fail_off();
    assert_eq!(allocator.alloc(1, 1, NONE), Ok(page), "the cache is back, as it was");
    for pa in [page, memory.pa(17), memory.pa(18)] {
        allocator.free(pa).unwrap();
    }
    let stats = allocator.stats();
    assert_eq!((stats.free_pages, stats.used_pages), (before.free_pages, 0));
    assert_eq!(stats.misuse_reports, 0);
    assert_eq!(allocator.check(), Ok(()));
}

#[test]
fn a_free_finds_its_region_whichever_region_its_cpu_freed_to_last() {
    // A free looks first in the region its CPU last freed to: every guess,
    // right, wrong or out of date, must give the answer a search gives.
    let memory = TestMemory::new(0x10_0000, 250);
    let allocator = allocator_with_debug(&memory, DebugFlags::NONE);
    memory.add(allocator, 100, 150, Pool::Kernel).unwrap();
    memory.add(allocator, 200, 250, Pool::Kernel).unwrap();
    let taken = |pages: &[u64]| {
        for &page in pages {
            allocator.alloc_at(memory.pa(page), 1, NONE).unwrap();
        }
    };
    let refused = |page: u64, status: PageStatus| {
        let before = allocator.stats();
        assert_eq!(allocator.free(memory.pa(page)), Err(status), "page {page}");
        assert_eq!(allocator.stats(), one_more_misuse(before), "page {page}");
    };
    on_cpu(0);
    taken(&[110, 111, 210, 211, 212]);
    // From the upper region to the lower one and back, on two CPUs.
    allocator.free(memory.pa(210)).unwrap();
    allocator.free(memory.pa(110)).unwrap();
    on_cpu(1);
    allocator.free(memory.pa(211)).unwrap();
    on_cpu(0);
    // CPU 0 last freed to the lower region: pages near it but not in it.
    refused(100, PageStatus::ENOTMANAGED); // its metadata
    refused(150, PageStatus::ENOTMANAGED); // past its end, in the gap
    refused(200, PageStatus::ENOTMANAGED); // the other region's metadata
    refused(110, PageStatus::ENOTALLOCATED); // freed just now
    refused(249, PageStatus::ENOTALLOCATED); // never allocated
                                             // A region below both: the table's indices move under each guess.
    memory.add(allocator, 0, 50, Pool::Kernel).unwrap();
    taken(&[10]);
    allocator.free(memory.pa(111)).unwrap();
    allocator.free(memory.pa(10)).unwrap();
    on_cpu(1);
    allocator.free(memory.pa(212)).unwrap();
    assert_eq!(allocator.stats().used_pages, 0);
    assert_eq!(allocator.check(), Ok(()));
}

#[test]
fn a_last_region_left_by_an_earlier_allocator_is_only_a_wrong_guess() {
    let caches: &'static CpuCaches = Box::leak(Box::new(CpuCaches::new()));
    on_cpu(0);
    // CPU 0 last frees to region 2 of three, then under an allocator with
    // one region: a guess past the end of its table.
    for regions in [3, 1] {
        let memory = TestMemory::new(0x10_0000, 64 * regions);
        let config = Config {
            phys_offset: memory.phys_offset,
            debug: DebugFlags::NONE,
        };
        let allocator = Allocator::with_cpu_caches(config, TestHooks, caches);
        for region in 0..regions {
            memory
                .add(&allocator, region * 64, region * 64 + 64, Pool::Kernel)
                .unwrap();
        }
        let last = memory.pa(regions * 64 - 1);
        allocator.alloc_at(last, 1, NONE).unwrap();
        assert_eq!(allocator.free(last), Ok(()), "{regions} regions");
        assert_eq!(allocator.free(last), Err(PageStatus::ENOTALLOCATED));
        assert_eq!(allocator.free(memory.pa(regions * 64)), Err(PageStatus::ENOTMANAGED));
        assert_eq!(allocator.check(), Ok(()));
    }
}

#[test]
#[should_panic(expected = "already serve another allocator")]
fn caches_serve_one_allocator_at_a_time() {
    let caches: &'static CpuCaches = Box::leak(Box::new(CpuCaches::new()));
    let _first = Allocator::with_cpu_caches(Config::default(), TestHooks, caches);
    let _second = Allocator::with_cpu_caches(Config::default(), TestHooks, caches);
}

#[test]
fn a_dropped_allocator_leaves_its_caches_empty_for_the_next() {
    let caches: &'static CpuCaches = Box::leak(Box::new(CpuCaches::new()));
    on_cpu(0);
    for round in 0..2 {
        let memory = TestMemory::new(0x10_0000, 64);
        let config = Config {
            phys_offset: memory.phys_offset,
            debug: DebugFlags::NONE,
        };
        let allocator = Allocator::with_cpu_caches(config, TestHooks, caches);
        assert_eq!(allocator.stats().cached_pages, 0, "round {round}");
        memory.add(&allocator, 0, 64, Pool::Kernel).unwrap();
        let page = allocator.alloc(1, 1, NONE).unwrap();
        allocator.free(page).unwrap();
        assert_eq!(allocator.stats().cached_pages, BATCH_PAGES);
        // Dropped with pages cached: the next round's allocator must not
        // hand them out.
    }
}

#[test]
fn a_search_retried_after_draining_the_caches_is_one_scheduled_attempt() {
    let (_memory, allocator) = one_region(64);
    let mut held = Vec::new();
    while let Ok(pa) = allocator.alloc(1, 1, NONE) {
        held.push(pa);
    }
    // Some back: they stay in this CPU's cache; the bitmap has none free.
    for pa in held.drain(..4) {
        allocator.free(pa).unwrap();
    }
    assert_eq!(allocator.stats().cached_pages, 4);
    let before = allocator.stats().failed_allocs;

    allocator.fail_after(1);
    // The search finds the bitmap full, takes the cached pages back and
    // searches again: still the one attempt let through.
    held.push(allocator.alloc(1, 1, NONE).expect("the first attempt succeeds"));
    assert_eq!(allocator.alloc(1, 1, NONE), Err(PageStatus::ENOMEM));
    assert_eq!(allocator.stats().failed_allocs, before + 1);
    allocator.fail_off();
    for pa in held {
        allocator.free(pa).unwrap();
    }
    assert_eq!(allocator.check(), Ok(()));
}

#[test]
fn an_interrupted_cache_operation_sends_calls_on_its_cpu_to_the_lock_and_check_to_ebusy() {
    let (memory, allocator) = one_region(64);
    // The last CPU: check holds every other magazine before it finds this
    // one busy, and must let them all go.
    on_cpu(KPALLOC_MAX_CPUS - 1);
    let seen = Rc::new(Cell::new(None));
    let record = Rc::clone(&seen);
    // The next alloc refills this CPU's empty cache: it holds the magazine
    // when it masks interrupts to take the lock, and this lands then.
    interrupt_next_lock(move || {
        let checked = allocator.check();
        let misuse = allocator.stats().misuse_reports;
        let page = allocator.alloc(1, 1, NONE);
        let cached_after_free = page.map(|pa| {
            allocator.free(pa).unwrap();
            allocator.stats().cached_pages
        });
        record.set(Some((checked, misuse, page, cached_after_free)));
    });
    let page = allocator.alloc(1, 1, NONE).unwrap();
    let (checked, misuse, inner, cached_after_free) = seen.take().expect("the interrupt ran");
    assert_eq!(checked, Err(PageStatus::EBUSY));
    assert_eq!(misuse, 0, "EBUSY from check is no misuse");
    assert_eq!(
        inner,
        Ok(memory.pa(1)),
        "the busy cache is skipped: first fit under the lock"
    );
    assert_eq!(cached_after_free, Ok(0), "and freed back to the bitmap");

    assert!(is_in(&memory, page, 1..17));
    let stats = allocator.stats();
    assert_eq!((stats.used_pages, stats.cached_pages), (1, BATCH_PAGES - 1));
    assert_eq!(stats.misuse_reports, 0);
    assert_eq!(allocator.check(), Ok(()), "no magazine stayed held");
    on_cpu(0);
    let other = allocator.alloc(1, 1, NONE).unwrap();
    assert!(is_in(&memory, other, 17..33), "CPU 0's own cache, refilled");
    assert_eq!(allocator.stats().cached_pages, 2 * (BATCH_PAGES - 1));
}

/// Threads, each on the CPU its entry names.
const THREAD_CPUS: [[usize; 4]; 2] = [
    [0, 1, 2, 3],
    // Two threads on CPU 0, and CPU 1 twice (numbers wrap).
    [0, 0, 1, 1 + KPALLOC_MAX_CPUS],
];
/// Mostly single pages, now and then a block of 2 to 4; handed over by the
/// thread's own reference, so that its last put may come from any thread
/// (and CPU); `check()` may find a cache held by a thread on the same CPU
/// number.
const THREADS_ON_CPUS: Churn = Churn {
    threads: 4,
    ops_per_thread: if cfg!(miri) { 60 } else { 10_000 },
    board_slots: 8,
    request: |r| Request {
        pages: if r % 6 == 0 { 2 + (r >> 4) % 3 } else { 1 },
        align: 1,
        flags: NONE,
    },
    split: false,
    handoff_keeps_a_reference: false,
    free_sized: true,
    check_one_in: 16,
    check_may_be_busy: true,
};

fn threads_on_cpus(cpus: [usize; 4]) {
    let pages = if cfg!(miri) { 48 } else { 192 };
    let memory = TestMemory::new(0x10_0000, pages);
    let allocator = allocator_with_debug(&memory, DebugFlags::NONE);
    memory.add(allocator, 0, pages / 2, Pool::Kernel).unwrap();
    memory.add(allocator, pages / 2, pages, Pool::Kernel).unwrap();
    on_cpu(0);
    let outcome = THREADS_ON_CPUS.run(allocator, |thread| on_cpu(cpus[thread]));
    let (fresh, stats, counts) = (&outcome.fresh, &outcome.stats, &outcome.counts);
    assert!(stats.cached_pages <= 4 * MAGAZINE_PAGES);
    assert!(counts.allocs > 0);
    // Every free page can still be allocated, once.
    let mut every = BTreeSet::new();
    while let Ok(pa) = allocator.alloc(1, 1, NONE) {
        assert!(every.insert(pa.as_u64()));
    }
    assert_eq!(every.len() as u64, fresh.free_pages);
    println!(
        "cpus {cpus:?}: {} ops in {:.2?}: {} allocs, {} ENOMEM, {} busy checks",
        counts.ops, outcome.elapsed, counts.allocs, counts.enomem, counts.busy_checks,
    );
}

#[test]
fn four_threads_on_four_cpus_share_pages_through_their_caches() {
    threads_on_cpus(THREAD_CPUS[0]);
}

#[test]
fn threads_sharing_a_cpu_number_stay_correct() {
    threads_on_cpus(THREAD_CPUS[1]);
}

/// `stats()` from an interrupt that lands right after the lock is released
/// (irq_restore) inside the alloc or free on this thread that `operation`
/// makes. A panic in `stats()` comes back as `Err`.
fn stats_in_interrupt_after_unlock(
    allocator: &'static CachedAllocator,
    operation: impl FnOnce(),
) -> Result<PageStats, String> {
    let seen = Rc::new(RefCell::new(None));
    let record = Rc::clone(&seen);
    interrupt_after_next_unlock(move || {
        let stats = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| allocator.stats())).map_err(|panic| {
            panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default()
        });
        *record.borrow_mut() = Some(stats);
    });
    operation();
    let stats = seen.borrow_mut().take().expect("the interrupt ran");
    stats
}

#[test]
fn stats_during_a_refill_count_the_refilled_pages_as_cached_not_used() {
    let (_memory, allocator) = one_region(64);
    let fresh = allocator.stats();
    // CPU 0's cache is empty: the alloc refills it, and the interrupt comes
    // when the refill releases the lock.
    let during = stats_in_interrupt_after_unlock(allocator, || {
        allocator.alloc(1, 1, NONE).unwrap();
    })
    .unwrap();
    assert_accounted(&during);
    assert!(
        during.used_pages <= 1 && during.free_pages >= fresh.free_pages - 1,
        "no page is allocated yet, 16 are cached: {during:?}"
    );
    let after = allocator.stats();
    assert_eq!((after.used_pages, after.cached_pages), (1, BATCH_PAGES - 1));
}

#[test]
fn stats_right_after_a_flush_count_the_flushed_pages_once() {
    let (_memory, allocator) = one_region(64);
    let fresh = allocator.stats();
    // Fill CPU 0's magazine with pages allocated on CPU 1.
    let page = allocator.alloc(1, 1, NONE).unwrap();
    allocator.free(page).unwrap();
    on_cpu(1);
    let pages: Vec<_> = (0..BATCH_PAGES).map(|_| allocator.alloc(1, 1, NONE).unwrap()).collect();
    let last = allocator.alloc(1, 1, NONE).unwrap();
    on_cpu(0);
    for page in pages {
        allocator.free(page).unwrap();
    }
    let full = allocator.stats();
    assert_eq!(
        (full.used_pages, full.cached_pages),
        (1, MAGAZINE_PAGES + BATCH_PAGES - 1)
    );
    // One block left; freeing it on CPU 0 flushes half the magazine, and the
    // interrupt comes when the flush releases the lock.
    let during = stats_in_interrupt_after_unlock(allocator, || allocator.free(last).unwrap())
        .unwrap_or_else(|panic| panic!("stats() panicked: {panic}"));
    assert_accounted(&during);
    assert!(during.used_pages <= 1, "{during:?}");
    let after = allocator.stats();
    assert_eq!((after.free_pages, after.used_pages), (fresh.free_pages, 0));
    assert_eq!(allocator.check(), Ok(()));
}

#[test]
fn stats_stay_consistent_while_other_cpus_refill_and_flush() {
    const HELD: u64 = BATCH_PAGES + 1;
    let rounds = if cfg!(miri) { 3 } else { 4_000 };
    let (_memory, allocator) = one_region(128);
    let fresh = allocator.stats();
    std::thread::scope(|scope| {
        let worker = scope.spawn(move || {
            for _ in 0..rounds {
                // CPU 1 refills about once a round, and CPU 0 flushes as
                // often, with few pages allocated.
                on_cpu(1);
                let pages: Vec<_> = (0..HELD).map(|_| allocator.alloc(1, 1, NONE).unwrap()).collect();
                on_cpu(0);
                for page in pages {
                    allocator.free(page).unwrap();
                }
            }
        });
        on_cpu(2);
        let mut samples = 0;
        // Until the worker ends, whether it finishes or fails (the scope
        // then reports its panic): a flag it set at the end would leave
        // this loop spinning after a failure.
        while !worker.is_finished() || samples == 0 {
            let stats = allocator.stats();
            assert_accounted(&stats);
            assert!(stats.used_pages <= HELD, "{stats:?}");
            assert!(stats.free_pages >= fresh.free_pages - HELD, "{stats:?}");
            samples += 1;
        }
    });
    let stats = allocator.stats();
    assert_eq!((stats.free_pages, stats.used_pages), (fresh.free_pages, 0));
    assert_eq!(allocator.check(), Ok(()));
}

#[test]
fn drain_caches_gives_every_cached_page_back_except_a_busy_cache() {
    let (_memory, allocator) = one_region(128);
    let fresh = allocator.stats();
    // Pages parked on three CPUs.
    for cpu in 0..3 {
        on_cpu(cpu);
        let pa = allocator.alloc(1, 1, NONE).unwrap();
        allocator.free(pa).unwrap();
    }
    on_cpu(0);
    let parked = allocator.stats();
    assert_eq!(parked.cached_pages, 3 * BATCH_PAGES, "{parked:?}");
    assert!(parked.largest_free_run < fresh.largest_free_run);
    assert_eq!(allocator.drain_caches() as u64, parked.cached_pages);
    let drained = allocator.stats();
    assert_eq!(
        drained,
        PageStats {
            high_water_pages: drained.high_water_pages,
            ..fresh
        },
        "no page cached, and the free space has its old shape"
    );
    assert_eq!(allocator.drain_caches(), 0, "nothing left");
    allocator.check().unwrap();

    // CPU 1 parks a refill; CPU 2 fills its magazine, and its next free
    // flushes half of it under the lock, holding the magazine: a drain from
    // an interrupt there takes CPU 1's pages and leaves CPU 2's.
    on_cpu(1);
    let pa = allocator.alloc(1, 1, NONE).unwrap();
    allocator.free(pa).unwrap();
    on_cpu(2);
    // 33 pages: three refills of 16, so 15 stay cached; 17 frees fill the
    // magazine.
    let held: Vec<_> = (0..MAGAZINE_PAGES + 1)
        .map(|_| allocator.alloc(1, 1, NONE).unwrap())
        .collect();
    let (filling, rest) = held.split_at(17);
    for &pa in filling {
        allocator.free(pa).unwrap();
    }
    assert_eq!(allocator.stats().cached_pages, BATCH_PAGES + MAGAZINE_PAGES);
    let drained_in_interrupt = Rc::new(Cell::new(usize::MAX));
    let seen = drained_in_interrupt.clone();
    interrupt_next_lock(move || seen.set(allocator.drain_caches()));
    allocator.free(rest[0]).unwrap();
    assert_eq!(drained_in_interrupt.get() as u64, BATCH_PAGES, "CPU 1's pages only");
    assert_eq!(allocator.stats().cached_pages, MAGAZINE_PAGES - BATCH_PAGES + 1);
    for &pa in &rest[1..] {
        allocator.free(pa).unwrap();
    }
    allocator.drain_caches();
    assert_eq!(allocator.stats().cached_pages, 0);
    assert_eq!(allocator.stats().largest_free_run, fresh.largest_free_run);
    allocator.check().unwrap();
}
