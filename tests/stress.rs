//! Concurrency stress: 8 threads (on however few cores) share one
//! Allocator and do random alloc/get/put/free/split, handing references to
//! each other through a board. Every page a thread owns carries its id and
//! a sequence number, checked before every release; at the end every page
//! is free again and check() passes.

#[path = "common/churn.rs"]
mod churn;
mod common;

use churn::{Churn, Request};
use common::TestMemory;
use kpalloc::{AllocFlags, Pool};

/// 8 threads, blocks of 1 to 8 pages aligned to 1 to 8, a quarter of them
/// zeroed; blocks split, and handed over by a second reference.
const STRESS: Churn = Churn {
    threads: 8,
    ops_per_thread: if cfg!(miri) { 40 } else { 10_000 },
    board_slots: 16,
    request: |r| Request {
        pages: 1 + r % 8,
        align: 1 << ((r >> 8) % 4),
        flags: if (r >> 12) % 4 == 0 {
            AllocFlags::ZERO
        } else {
            AllocFlags::NONE
        },
    },
    split: true,
    handoff_keeps_a_reference: true,
    free_sized: false,
    check_one_in: 32,
    check_may_be_busy: false,
};

#[test]
fn eight_threads_share_one_allocator() {
    let pages = if cfg!(miri) { 160 } else { 1600 };
    let memory = TestMemory::new(0x10_0000, pages);
    let allocator = memory.allocator();
    memory.add(&allocator, 0, pages / 3, Pool::Kernel).unwrap();
    memory.add(&allocator, pages / 3, pages, Pool::Kernel).unwrap();
    let outcome = STRESS.run(&allocator, |_| {});
    let (fresh, stats, counts) = (&outcome.fresh, &outcome.stats, &outcome.counts);
    assert_eq!(stats.largest_free_run, fresh.largest_free_run);
    println!(
        "stress: {} threads on {} cores, {} ops in {:.2?}: {} allocs ({} ENOMEM), {} frees, {} gets, {} puts, \
         {} splits, {} board handoffs, {} concurrent checks; high water {} of {} pages",
        STRESS.threads,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        counts.ops,
        outcome.elapsed,
        counts.allocs,
        counts.enomem,
        counts.frees,
        counts.gets,
        counts.puts,
        counts.splits,
        counts.handoffs,
        counts.checks,
        stats.high_water_pages,
        fresh.free_pages,
    );
}
