//! Threads that churn one allocator: each draws random operations (alloc,
//! free or put, get, split, handing blocks to other threads through a
//! board, check) on the blocks it holds. Every page a thread allocates
//! carries the thread's id and a sequence number, checked before every
//! release; at the end the board is emptied and every page is free again.
//! The knobs ([`Churn`]) say which blocks to draw and which operations to
//! make; the test around it sets up the allocator and each thread (its CPU
//! number, say) and checks what is particular to it.
//!
//! Declared by the tests that use it, next to `mod common;`:
//! `#[path = "common/churn.rs"] mod churn;`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kpalloc::{AllocFlags, Allocator, Hooks, PageStats, PageStatus};
use x86_64::PhysAddr;

use crate::common::PAGE;

/// What the threads do, and how often.
pub struct Churn {
    pub threads: usize,
    pub ops_per_thread: u64,
    /// Slots of the board through which threads hand blocks to each other.
    pub board_slots: usize,
    /// The block an allocation asks for, drawn from the random number
    /// shifted right by 8 (its low bits picked the operation).
    pub request: fn(u64) -> Request,
    /// Split exclusive multi-page blocks into pages; without it, that
    /// draw allocates instead.
    pub split: bool,
    /// Hand a block over by taking a second reference (`get`) and putting
    /// it on the board; without it, the thread's own reference goes.
    pub handoff_keeps_a_reference: bool,
    /// Release an exclusive block with `free_sized` rather than `free`.
    pub free_sized: bool,
    /// One in this many check draws calls `check()` (one draw in 16 is a
    /// check draw).
    pub check_one_in: u64,
    /// `check()` may answer `EBUSY` (a per-CPU cache held by another
    /// thread), counted in `busy_checks`; without it only `Ok` passes.
    pub check_may_be_busy: bool,
}

/// A block to allocate.
pub struct Request {
    pub pages: u64,
    pub align: usize,
    pub flags: AllocFlags,
}

/// What one thread (or all of them, added up) did.
#[derive(Default, Debug)]
pub struct Counts {
    pub ops: u64,
    pub allocs: u64,
    pub enomem: u64,
    pub frees: u64,
    pub gets: u64,
    pub puts: u64,
    pub splits: u64,
    pub handoffs: u64,
    pub checks: u64,
    pub busy_checks: u64,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.ops += other.ops;
        self.allocs += other.allocs;
        self.enomem += other.enomem;
        self.frees += other.frees;
        self.gets += other.gets;
        self.puts += other.puts;
        self.splits += other.splits;
        self.handoffs += other.handoffs;
        self.checks += other.checks;
        self.busy_checks += other.busy_checks;
    }
}

/// How a run ended: every page is free again, and `check()` passed.
pub struct Outcome {
    /// Every thread's counts and the final emptying of the board, added up.
    pub counts: Counts,
    /// The allocator's stats before the threads started.
    pub fresh: PageStats,
    /// The allocator's stats after every block was released.
    pub stats: PageStats,
    /// How long the threads ran.
    pub elapsed: Duration,
}

impl Churn {
    /// Runs the threads over `allocator`; each first calls `on_thread` with
    /// its number (from 0). Then empties the board and checks that every
    /// page is free again, nothing was reported as misuse and `check()`
    /// passes.
    pub fn run<H: Hooks>(&self, allocator: &Allocator<H>, on_thread: impl Fn(usize) + Sync) -> Outcome {
        let fresh = allocator.stats();
        let board: Vec<AtomicU64> = (0..self.board_slots).map(|_| AtomicU64::new(0)).collect();
        let started = Instant::now();
        let all: Vec<Counts> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..self.threads)
                .map(|thread| {
                    let (board, on_thread) = (&board, &on_thread);
                    scope.spawn(move || {
                        on_thread(thread);
                        Worker::new(self, allocator, board, thread as u64 + 1).run()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let elapsed = started.elapsed();
        let mut last = Worker::new(self, allocator, &board, 0);
        for slot in &board {
            let pa = slot.swap(0, Ordering::AcqRel);
            if pa != 0 {
                let block = last.adopt(pa);
                last.release(block);
            }
        }
        let stats = allocator.stats();
        assert_eq!(stats.used_pages, 0, "{stats:?}");
        assert_eq!(stats.free_pages, fresh.free_pages, "{stats:?}");
        assert_eq!(stats.misuse_reports, 0);
        assert_eq!(allocator.check(), Ok(()));
        let mut counts = last.counts;
        for thread in &all {
            counts.add(thread);
        }
        Outcome {
            counts,
            fresh,
            stats,
            elapsed,
        }
    }
}

/// A reference a thread holds.
#[derive(Clone, Copy)]
struct Held {
    pa: u64,
    pages: u64,
    /// (thread, sequence) tag written by the block's allocator.
    tag: u64,
    /// The index of the first page in the block as allocated (not 0 for
    /// the pages of a split block but the first).
    first_index: u64,
    /// This thread allocated it and no one else holds a reference: it may
    /// be written, freed (not only put) and split.
    exclusive: bool,
}

fn xorshift(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// One thread: the blocks it holds and what it did.
struct Worker<'a, H: Hooks> {
    churn: &'a Churn,
    allocator: &'a Allocator<H>,
    board: &'a [AtomicU64],
    id: u64,
    seq: u64,
    held: Vec<Held>,
    counts: Counts,
}

impl<'a, H: Hooks> Worker<'a, H> {
    fn new(churn: &'a Churn, allocator: &'a Allocator<H>, board: &'a [AtomicU64], id: u64) -> Self {
        Worker {
            churn,
            allocator,
            board,
            id,
            seq: 0,
            held: Vec::new(),
            counts: Counts::default(),
        }
    }

    fn run(mut self) -> Counts {
        let mut seed = 0x9E37_79B9_7F4A_7C15 ^ (self.id + 1).wrapping_mul(0x2545_F491_4F6C_DD1D);
        for _ in 0..self.churn.ops_per_thread {
            self.counts.ops += 1;
            let r = xorshift(&mut seed);
            let any = !self.held.is_empty();
            match r % 16 {
                0..=4 => self.alloc(r),
                11 if !self.churn.split => self.alloc(r),
                5..=9 if any => {
                    let block = self.held.swap_remove(self.pick(r));
                    self.release(block);
                }
                10 if any => self.get(r),
                11 => self.split(),
                12 if any => self.hand_over(r),
                13 | 14 => self.take(r),
                15 if (r >> 8) % self.churn.check_one_in == 0 => self.check(),
                _ => {}
            }
        }
        while let Some(block) = self.held.pop() {
            self.release(block);
        }
        self.counts
    }

    /// One of the held blocks.
    fn pick(&self, r: u64) -> usize {
        (r >> 8) as usize % self.held.len()
    }

    fn slot(&self, r: u64) -> &'a AtomicU64 {
        &self.board[(r >> 24) as usize % self.board.len()]
    }

    fn word(&self, pa: u64, offset: u64) -> *mut u64 {
        std::ptr::with_exposed_provenance_mut(self.allocator.kva(PhysAddr::new(pa + offset)))
    }

    /// Allocates and stamps a block; on ENOMEM releases one.
    fn alloc(&mut self, r: u64) {
        let Request { pages, align, flags } = (self.churn.request)(r >> 8);
        match self.allocator.alloc(pages as usize, align, flags) {
            Ok(pa) => {
                let pa = pa.as_u64();
                if flags | AllocFlags::ZERO == flags {
                    for i in 0..pages * PAGE / 8 {
                        // SAFETY: just allocated to this thread.
                        assert_eq!(unsafe { self.word(pa, i * 8).read() }, 0);
                    }
                }
                self.seq += 1;
                let block = Held {
                    pa,
                    pages,
                    tag: self.id << 48 | self.seq,
                    first_index: 0,
                    exclusive: true,
                };
                self.stamp(&block);
                self.held.push(block);
                self.counts.allocs += 1;
            }
            Err(status) => {
                assert_eq!(status, PageStatus::ENOMEM);
                self.counts.enomem += 1;
                if let Some(block) = self.held.pop() {
                    self.release(block);
                }
            }
        }
    }

    /// Writes the tag into every page: its first word, its index, its last
    /// word.
    fn stamp(&self, held: &Held) {
        for i in 0..held.pages {
            let pa = held.pa + i * PAGE;
            // SAFETY: the block is allocated to this thread alone.
            unsafe {
                self.word(pa, 0).write(held.tag);
                self.word(pa, 8).write(held.first_index + i);
                self.word(pa, PAGE - 8).write(!held.tag);
            }
        }
    }

    /// Checks the tag of every page, as `stamp` wrote it.
    fn verify(&self, held: &Held) {
        for i in 0..held.pages {
            let pa = held.pa + i * PAGE;
            // SAFETY: this thread holds a reference; nobody writes a shared
            // block.
            let (tag, index, tail) = unsafe {
                (
                    self.word(pa, 0).read(),
                    self.word(pa, 8).read(),
                    self.word(pa, PAGE - 8).read(),
                )
            };
            assert_eq!(
                (tag, index, tail),
                (held.tag, held.first_index + i, !held.tag),
                "page {pa:#x}: tag of thread {} seq {} expected",
                held.tag >> 48,
                held.tag & 0xFFFF_FFFF_FFFF
            );
        }
    }

    /// Checks the tags, then frees the block when exclusive, else puts
    /// this reference.
    fn release(&mut self, held: Held) {
        self.verify(&held);
        let pa = PhysAddr::new(held.pa);
        if !held.exclusive {
            assert_eq!(self.allocator.put(pa), Ok(()));
            self.counts.puts += 1;
        } else if self.churn.free_sized {
            assert_eq!(self.allocator.free_sized(pa, held.pages as usize), Ok(()));
            self.counts.frees += 1;
        } else {
            assert_eq!(self.allocator.free(pa), Ok(()));
            self.counts.frees += 1;
        }
    }

    /// A second reference of our own: get, then hold both as shared.
    fn get(&mut self, r: u64) {
        let i = self.pick(r);
        assert_eq!(self.allocator.get(PhysAddr::new(self.held[i].pa)), Ok(()));
        self.counts.gets += 1;
        self.held[i].exclusive = false;
        let copy = self.held[i];
        self.held.push(copy);
    }

    /// Splits an exclusive multi-page block into pages, if there is one.
    fn split(&mut self) {
        let Some(i) = self.held.iter().position(|b| b.exclusive && b.pages > 1) else {
            return;
        };
        let block = self.held.swap_remove(i);
        self.verify(&block);
        assert_eq!(self.allocator.split(PhysAddr::new(block.pa)), Ok(()));
        self.counts.splits += 1;
        for k in 0..block.pages {
            self.held.push(Held {
                pa: block.pa + k * PAGE,
                pages: 1,
                first_index: block.first_index + k,
                ..block
            });
        }
    }

    /// Puts a reference on the board (a second one, or this thread's own),
    /// taking whatever was there: its last put may then come from any
    /// thread.
    fn hand_over(&mut self, r: u64) {
        let i = self.pick(r);
        let pa = if self.churn.handoff_keeps_a_reference {
            assert_eq!(self.allocator.get(PhysAddr::new(self.held[i].pa)), Ok(()));
            self.counts.gets += 1;
            self.held[i].exclusive = false;
            self.held[i].pa
        } else {
            let block = self.held.swap_remove(i);
            self.verify(&block);
            block.pa
        };
        let previous = self.slot(r).swap(pa, Ordering::AcqRel);
        self.counts.handoffs += 1;
        if previous != 0 {
            let block = self.adopt(previous);
            self.held.push(block);
        }
    }

    /// Takes a reference from the board, if there is one.
    fn take(&mut self, r: u64) {
        let previous = self.slot(r).swap(0, Ordering::AcqRel);
        if previous != 0 {
            let block = self.adopt(previous);
            self.held.push(block);
        }
    }

    /// A reference handed over through the board: its tag and index are
    /// read from it.
    fn adopt(&self, pa: u64) -> Held {
        let pages = self.allocator.block_pages(PhysAddr::new(pa)) as u64;
        assert!(pages >= 1 && self.allocator.refcount(PhysAddr::new(pa)) >= 1);
        // SAFETY: the reference taken from the board keeps the block
        // allocated.
        let (tag, first_index) = unsafe { (self.word(pa, 0).read(), self.word(pa, 8).read()) };
        Held {
            pa,
            pages,
            tag,
            first_index,
            exclusive: false,
        }
    }

    fn check(&mut self) {
        match self.allocator.check() {
            Ok(()) => self.counts.checks += 1,
            // Another thread on this thread's cache number held it.
            Err(PageStatus::EBUSY) if self.churn.check_may_be_busy => self.counts.busy_checks += 1,
            Err(status) => panic!("check: {status:?}"),
        }
    }
}
