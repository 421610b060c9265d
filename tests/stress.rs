//! Concurrency stress: 8 threads (on however few cores) share one
//! Allocator and do random alloc/get/put/free/split, handing references to
//! each other through a board. Every page a thread owns carries its id and
//! a sequence number, checked before every release; at the end every page
//! is free again and check() passes.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use common::{TestMemory, PAGE};
use kpalloc::{AllocFlags, Allocator, NoHooks, PageStatus, Pool};
use x86_64::PhysAddr;

const THREADS: u64 = 8;
const OPS_PER_THREAD: u64 = if cfg!(miri) { 40 } else { 10_000 };
const BOARD: usize = 16;

/// A reference this thread holds.
struct Held {
    pa: u64,
    pages: u64,
    /// (thread, sequence) tag written by the block's allocator.
    tag: u64,
    /// This thread allocated it and no one else holds a reference: it may
    /// be written, freed (not only put) and split.
    exclusive: bool,
}

fn word(allocator: &Allocator<NoHooks>, pa: u64, offset: u64) -> *mut u64 {
    std::ptr::with_exposed_provenance_mut(allocator.kva(PhysAddr::new(pa + offset)))
}

/// Writes the tag into every page: its first word, its index, its last word.
fn stamp(allocator: &Allocator<NoHooks>, held: &Held) {
    for i in 0..held.pages {
        let pa = held.pa + i * PAGE;
        // SAFETY: the block is allocated to this thread alone.
        unsafe {
            word(allocator, pa, 0).write(held.tag);
            word(allocator, pa, 8).write(i);
            word(allocator, pa, PAGE - 8).write(!held.tag);
        }
    }
}

/// Checks the tag of every page, as `stamp` wrote it.
fn verify(allocator: &Allocator<NoHooks>, held: &Held, first_index: u64) {
    for i in 0..held.pages {
        let pa = held.pa + i * PAGE;
        // SAFETY: this thread holds a reference; nobody writes a shared block.
        let (tag, index, tail) = unsafe {
            (
                word(allocator, pa, 0).read(),
                word(allocator, pa, 8).read(),
                word(allocator, pa, PAGE - 8).read(),
            )
        };
        assert_eq!(
            (tag, index, tail),
            (held.tag, first_index + i, !held.tag),
            "page {pa:#x}: tag of thread {} seq {} expected",
            held.tag >> 48,
            held.tag & 0xFFFF_FFFF_FFFF
        );
    }
}

fn xorshift(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[derive(Default, Debug)]
struct Counts {
    ops: u64,
    allocs: u64,
    enomem: u64,
    frees: u64,
    gets: u64,
    puts: u64,
    splits: u64,
    handoffs: u64,
    checks: u64,
}

fn release(allocator: &Allocator<NoHooks>, held: Held, counts: &mut Counts) {
    // After a split the page index restarts nowhere: each page keeps its
    // index in the original block, stored at the head.
    let first_index = unsafe { word(allocator, held.pa, 8).read() };
    verify(allocator, &held, first_index);
    if held.exclusive {
        assert_eq!(allocator.free(PhysAddr::new(held.pa)), Ok(()));
        counts.frees += 1;
    } else {
        assert_eq!(allocator.put(PhysAddr::new(held.pa)), Ok(()));
        counts.puts += 1;
    }
}

fn worker(allocator: &Allocator<NoHooks>, board: &[AtomicU64; BOARD], id: u64) -> Counts {
    let mut seed = 0x9E37_79B9_7F4A_7C15 ^ (id + 1).wrapping_mul(0x2545_F491_4F6C_DD1D);
    let mut held: Vec<Held> = Vec::new();
    let mut counts = Counts::default();
    let mut seq = 0;
    for _ in 0..OPS_PER_THREAD {
        counts.ops += 1;
        let r = xorshift(&mut seed);
        match r % 16 {
            // Allocate and stamp.
            0..=4 => {
                let count = 1 + (r >> 8) % 8;
                let align = 1 << ((r >> 16) % 4);
                let flags = if (r >> 20) % 4 == 0 {
                    AllocFlags::ZERO
                } else {
                    AllocFlags::NONE
                };
                match allocator.alloc(count as usize, align, flags) {
                    Ok(pa) => {
                        let pa = pa.as_u64();
                        if flags == AllocFlags::ZERO {
                            for i in 0..count * PAGE / 8 {
                                // SAFETY: just allocated to this thread.
                                assert_eq!(unsafe { word(allocator, pa, i * 8).read() }, 0);
                            }
                        }
                        seq += 1;
                        let block = Held {
                            pa,
                            pages: count,
                            tag: id << 48 | seq,
                            exclusive: true,
                        };
                        stamp(allocator, &block);
                        held.push(block);
                        counts.allocs += 1;
                    }
                    Err(status) => {
                        assert_eq!(status, PageStatus::ENOMEM);
                        counts.enomem += 1;
                        if let Some(block) = held.pop() {
                            release(allocator, block, &mut counts);
                        }
                    }
                }
            }
            // Release a reference (free when exclusive, else put).
            5..=9 if !held.is_empty() => {
                let block = held.swap_remove((r >> 8) as usize % held.len());
                release(allocator, block, &mut counts);
            }
            // A second reference of our own: get, then hold it as shared.
            10 if !held.is_empty() => {
                let i = (r >> 8) as usize % held.len();
                assert_eq!(allocator.get(PhysAddr::new(held[i].pa)), Ok(()));
                counts.gets += 1;
                held[i].exclusive = false;
                let copy = Held {
                    exclusive: false,
                    ..held[i]
                };
                held.push(copy);
            }
            // Split an exclusive multi-page block into pages.
            11 => {
                if let Some(i) = held.iter().position(|b| b.exclusive && b.pages > 1) {
                    let block = held.swap_remove(i);
                    verify(allocator, &block, 0);
                    assert_eq!(allocator.split(PhysAddr::new(block.pa)), Ok(()));
                    counts.splits += 1;
                    for k in 0..block.pages {
                        held.push(Held {
                            pa: block.pa + k * PAGE,
                            pages: 1,
                            ..block
                        });
                    }
                }
            }
            // Publish a reference on the board (taking whatever was there).
            12 if !held.is_empty() => {
                let i = (r >> 8) as usize % held.len();
                assert_eq!(allocator.get(PhysAddr::new(held[i].pa)), Ok(()));
                counts.gets += 1;
                held[i].exclusive = false;
                let slot = &board[(r >> 24) as usize % BOARD];
                let previous = slot.swap(held[i].pa, Ordering::AcqRel);
                counts.handoffs += 1;
                if previous != 0 {
                    held.push(adopt(allocator, previous));
                }
            }
            // Take a reference from the board.
            13 | 14 => {
                let previous = board[(r >> 24) as usize % BOARD].swap(0, Ordering::AcqRel);
                if previous != 0 {
                    held.push(adopt(allocator, previous));
                }
            }
            15 if (r >> 8) % 32 == 0 => {
                assert_eq!(allocator.check(), Ok(()));
                counts.checks += 1;
            }
            _ => {}
        }
    }
    while let Some(block) = held.pop() {
        release(allocator, block, &mut counts);
    }
    counts
}

/// A reference handed over through the board: its tag is read from it.
fn adopt(allocator: &Allocator<NoHooks>, pa: u64) -> Held {
    let pages = allocator.block_pages(PhysAddr::new(pa)) as u64;
    assert!(pages >= 1 && allocator.refcount(PhysAddr::new(pa)) >= 1);
    // SAFETY: the reference taken from the board keeps the block allocated.
    let tag = unsafe { word(allocator, pa, 0).read() };
    Held {
        pa,
        pages,
        tag,
        exclusive: false,
    }
}

#[test]
fn eight_threads_share_one_allocator() {
    let pages = if cfg!(miri) { 160 } else { 1600 };
    let memory = TestMemory::new(0x10_0000, pages);
    let allocator = memory.allocator();
    memory.add(&allocator, 0, pages / 3, Pool::Kernel).unwrap();
    memory.add(&allocator, pages / 3, pages, Pool::Kernel).unwrap();
    let fresh = allocator.stats();
    let board: [AtomicU64; BOARD] = Default::default();
    let started = Instant::now();
    let all: Vec<Counts> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|id| {
                let (allocator, board) = (&allocator, &board);
                scope.spawn(move || worker(allocator, board, id + 1))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = started.elapsed();
    let mut left = Counts::default();
    for slot in &board {
        let pa = slot.swap(0, Ordering::AcqRel);
        if pa != 0 {
            release(&allocator, adopt(&allocator, pa), &mut left);
        }
    }
    let stats = allocator.stats();
    assert_eq!(stats.used_pages, 0, "{stats:?}");
    assert_eq!(stats.free_pages, fresh.free_pages);
    assert_eq!(stats.largest_free_run, fresh.largest_free_run);
    assert_eq!(stats.misuse_reports, 0);
    assert_eq!(allocator.check(), Ok(()));
    let sum = |f: fn(&Counts) -> u64| all.iter().map(f).sum::<u64>();
    println!(
        "stress: {THREADS} threads on {} cores, {} ops in {:.2?}: {} allocs ({} ENOMEM), {} frees, {} gets, {} puts, \
         {} splits, {} board handoffs, {} concurrent checks; high water {} of {} pages",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        sum(|c| c.ops),
        elapsed,
        sum(|c| c.allocs),
        sum(|c| c.enomem),
        sum(|c| c.frees),
        sum(|c| c.gets),
        sum(|c| c.puts) + left.puts,
        sum(|c| c.splits),
        sum(|c| c.handoffs),
        sum(|c| c.checks),
        stats.high_water_pages,
        fresh.free_pages,
    );
}
