//! A shadow of the per-CPU-cached allocator and a harness that runs
//! operations on an `Allocator::with_cpu_caches`, the CPU number switched
//! between steps, checking every answer against the shadow. The shadow
//! knows which pages are live (and their counts and lengths) but not where
//! a new block will be: single pages come most recently freed first, so
//! addresses are checked for what they must be (inside the pool's usable
//! memory, aligned, below 4 GiB for DMA32, over no live page), not
//! predicted. Every answer is predicted exactly: a success or ENOMEM by
//! whether a fitting run of non-live pages exists (cached pages count as
//! free: a failing search drains the caches), every refusal by the
//! shadow's page states, and a refusal changes nothing.
//!
//! Shared, not copied: `tests/cache_proptest.rs` drives it with proptest,
//! `fuzz/fuzz_targets/cached.rs` includes this file with `#[path]` and
//! drives it from libFuzzer bytes. Both declare `mod model;` (the
//! reference model's `tests/model/mod.rs`) at their root, used here as
//! `crate::model`.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};

use crate::model::{block_heads, nth_free_page, FakeMemory, ModelRegion, PageState, DMA32_PFN, PAGE};
use kpalloc::types::KPALLOC_MAX_CPUS;
use kpalloc::{AllocFlags, Allocator, Config, CpuCaches, DebugFlags, Hooks, PageStats, PageStatus, Pool};
use x86_64::PhysAddr;

/// Physical bases: low memory, straddling 4 GiB (DMA32 fits in part of the
/// memory), high memory (DMA32 never fits).
pub const BASES: [u64; 3] = [0x10_0000, (1 << 32) - 40 * PAGE, 1 << 40];

/// The CPU numbers `Op::Cpu` switches between: four CPUs, and one past
/// `KPALLOC_MAX_CPUS` (which shares CPU 1's caches: numbers wrap).
pub const CPUS: [usize; 5] = [0, 1, 2, 3, KPALLOC_MAX_CPUS + 1];
/// Block lengths of a burst of allocations, single pages most often.
pub const BURST_PAGES: [usize; 5] = [1, 1, 2, 4, 8];

/// The bits of an `AllocFlags` with ZERO, USER and DMA32 each on or off,
/// as an `Op` carries them.
pub fn flag_bits(zero: bool, user: bool, dma32: bool) -> u32 {
    [
        (zero, AllocFlags::ZERO),
        (user, AllocFlags::USER),
        (dma32, AllocFlags::DMA32),
    ]
    .into_iter()
    .filter(|&(on, _)| on)
    .fold(AllocFlags::NONE, |flags, (_, flag)| flags | flag)
    .bits()
}

thread_local! {
    /// The CPU this thread runs on, as `TestHooks::cpu_id` reports it.
    static CPU: Cell<usize> = const { Cell::new(0) };
}

fn on_cpu(cpu: usize) {
    CPU.with(|current| current.set(cpu));
}

struct TestHooks;

impl Hooks for TestHooks {
    fn cpu_id(&self) -> usize {
        CPU.with(Cell::get)
    }
}

// ---------------------------------------------------------------- shadow

/// The live blocks, page by page, and the counters the allocator keeps.
#[derive(Default)]
struct Shadow {
    regions: Vec<ModelRegion>,
    /// The tag written into the first 8 bytes of each live page (its
    /// complement into the last 8).
    tags: BTreeMap<u64, u64>,
    next_tag: u64,
    misuse_reports: u64,
    failed_allocs: u64,
}

impl Shadow {
    fn locate(&self, pa: u64) -> Result<(usize, u64), PageStatus> {
        let pfn = pa / PAGE;
        match self.regions.iter().position(|r| r.start <= pfn && pfn < r.end) {
            Some(i) if pa % PAGE == 0 && pfn >= self.regions[i].usable => Ok((i, pfn)),
            _ => Err(PageStatus::ENOTMANAGED),
        }
    }

    fn head(&self, pa: u64) -> Result<(usize, u64, u32, usize), PageStatus> {
        let (i, pfn) = self.locate(pa)?;
        match self.regions[i].state(pfn) {
            PageState::Free => Err(PageStatus::ENOTALLOCATED),
            PageState::Interior { .. } => Err(PageStatus::ENOTHEAD),
            PageState::Head { refs, len } => Ok((i, pfn, refs, len)),
        }
    }

    fn live_pages(&self) -> u64 {
        self.regions.iter().map(|r| r.pages.len() as u64 - r.free_pages()).sum()
    }

    fn user_not_live(&self) -> u64 {
        self.regions
            .iter()
            .filter(|r| r.pool == Pool::User)
            .map(ModelRegion::free_pages)
            .sum()
    }

    fn largest_run(&self) -> u64 {
        self.regions
            .iter()
            .map(ModelRegion::largest_free_run)
            .max()
            .unwrap_or(0)
    }

    /// Whether some run of `count` non-live pages, its first page number a
    /// multiple of `align`, lies in one region of the flags' pool (and ends
    /// at or below 4 GiB for DMA32).
    fn fits(&self, count: usize, align: usize, flags: AllocFlags) -> bool {
        let dma32 = flags.contains(AllocFlags::DMA32);
        self.regions.iter().filter(|r| r.pool == flags.pool()).any(|r| {
            let mut pfn = r.usable.next_multiple_of(align as u64);
            while pfn + count as u64 <= r.end && !(dma32 && pfn + count as u64 > DMA32_PFN) {
                if (pfn..pfn + count as u64).all(|p| r.state(p) == PageState::Free) {
                    return true;
                }
                pfn += align as u64;
            }
            false
        })
    }

    /// What `alloc_at(pa, count, flags)` answers.
    fn predict_alloc_at(&self, pa: u64, count: usize, flags: AllocFlags) -> Result<(usize, u64), PageStatus> {
        let (i, pfn) = self.locate(pa)?;
        let r = &self.regions[i];
        let end = pfn + count as u64;
        if end > r.end {
            return Err(PageStatus::ENOTMANAGED);
        }
        if r.pool != flags.pool() || (flags.contains(AllocFlags::DMA32) && end > DMA32_PFN) {
            return Err(PageStatus::EINVAL);
        }
        if !(pfn..end).all(|p| r.state(p) == PageState::Free) {
            return Err(PageStatus::EBUSY);
        }
        Ok((i, pfn))
    }

    /// Heads of live blocks: (address, count, length).
    fn heads(&self) -> Vec<(u64, u32, usize)> {
        block_heads(&self.regions)
    }

    /// The `n`-th usable page that is not live (free or cached), if any.
    fn nth_not_live(&self, n: u32) -> Option<u64> {
        nth_free_page(&self.regions, n)
    }
}

// ---------------------------------------------------------------- operations

#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// The n-th live block's head.
    Head(u32),
    /// A page after the head of the n-th live block (its head if one page).
    Interior(u32, u32),
    /// The n-th usable page that is not live (free or cached).
    NotLive(u32),
    /// Any page of the memory: metadata, live or not.
    AnyPage(u32),
}

#[derive(Clone, Copy, Debug)]
pub enum Length {
    Right,
    /// The block's length plus this (never 0), wrapping below 0.
    Wrong(i8),
}

#[derive(Clone, Copy, Debug)]
pub enum Op {
    Alloc {
        count: usize,
        align: usize,
        flags: u32,
    },
    AllocAt {
        target: Target,
        count: usize,
        flags: u32,
    },
    Free(Target),
    FreeSized(Target, Length),
    Get(Target),
    Put(Target),
    Split(Target),
    DrainCaches,
    Cpu(usize),
    /// `n` allocations in a row of `pages` pages aligned to their length
    /// (`flags`), or `n` puts on live heads: fills a magazine of pages or
    /// of blocks, or overflows it (a flush).
    Burst {
        n: usize,
        alloc: bool,
        pages: usize,
        flags: u32,
        seed: u32,
    },
}

// ---------------------------------------------------------------- harness

pub struct Harness {
    // Dropped first: nothing refers to the memory once it is gone (the
    // caches are empty by then if `finish` ran; after a panic in it, they
    // are never looked at again).
    allocator: Allocator<TestHooks>,
    shadow: Shadow,
    memory: FakeMemory,
    fresh_largest_run: u64,
    /// How many times each operation gave each answer (`note`).
    pub outcomes: RefCell<BTreeMap<String, u64>>,
}

impl Harness {
    /// An allocator with per-CPU caches in `caches` (empty, and used by no
    /// other allocator while this one lives: [`Harness::finish`] leaves
    /// them empty again) over regions of `layout` ((pages, user pool),
    /// back to back from physical address `base`), on CPU 0.
    pub fn new(base: u64, layout: &[(u64, bool)], caches: &'static CpuCaches) -> Self {
        let pages: u64 = layout.iter().map(|(pages, _)| pages).sum();
        let memory = FakeMemory::new(base, pages);
        let config = Config {
            phys_offset: memory.phys_offset,
            debug: DebugFlags::NONE,
        };
        let allocator = Allocator::with_cpu_caches(config, TestHooks, caches);
        let mut shadow = Shadow::default();
        let mut start = base / PAGE;
        for &(pages, user) in layout {
            let pool = if user { Pool::User } else { Pool::Kernel };
            let before = allocator.stats();
            // SAFETY: inside the fake memory, which outlives the allocator;
            // the regions do not overlap.
            unsafe { allocator.add_region(PhysAddr::new(start * PAGE), PhysAddr::new((start + pages) * PAGE), pool) }
                .unwrap();
            let meta = allocator.stats().metadata_pages - before.metadata_pages;
            assert!(meta >= 1 && meta < pages);
            shadow.regions.push(ModelRegion {
                start,
                usable: start + meta,
                end: start + pages,
                pool,
                pages: vec![PageState::Free; (pages - meta) as usize],
            });
            start += pages;
        }
        on_cpu(0);
        let fresh_largest_run = allocator.stats().largest_free_run;
        assert_eq!(fresh_largest_run, shadow.largest_run());
        Harness {
            allocator,
            shadow,
            memory,
            fresh_largest_run,
            outcomes: RefCell::default(),
        }
    }

    fn resolve(&self, target: Target) -> u64 {
        let heads = self.shadow.heads();
        let nth = |n: u32| heads.get(n as usize % heads.len().max(1)).copied();
        let fallback = self.memory.phys_base;
        match target {
            Target::Head(n) => nth(n).map_or(fallback, |h| h.0),
            Target::Interior(n, k) => nth(n).map_or(fallback, |(pa, _, len)| {
                if len > 1 {
                    pa + (1 + k as u64 % (len as u64 - 1)) * PAGE
                } else {
                    pa
                }
            }),
            Target::NotLive(n) => self.shadow.nth_not_live(n).unwrap_or(fallback),
            Target::AnyPage(n) => self.memory.phys_base + (n as u64 % self.memory.pages) * PAGE,
        }
    }

    fn note(&self, name: &str, result: Result<(), PageStatus>) {
        let answer = match result {
            Ok(()) => "Ok".to_string(),
            Err(status) => format!("{status:?}"),
        };
        *self
            .outcomes
            .borrow_mut()
            .entry(format!("{name} {answer}"))
            .or_default() += 1;
    }

    /// A new block of the shadow: checks it over no live page, marks it
    /// live and writes a fresh tag into each of its pages.
    fn claim(&mut self, i: usize, pfn: u64, count: usize) {
        let r = &mut self.shadow.regions[i];
        for p in pfn..pfn + count as u64 {
            assert_eq!(
                r.state(p),
                PageState::Free,
                "page {:#x} handed out while live",
                p * PAGE
            );
        }
        r.set(pfn, PageState::Head { refs: 1, len: count });
        for p in pfn + 1..pfn + count as u64 {
            r.set(
                p,
                PageState::Interior {
                    back: (p - pfn) as usize,
                },
            );
        }
        for p in pfn..pfn + count as u64 {
            self.shadow.next_tag += 1;
            let tag = self.shadow.next_tag << 16 | 0x5A;
            self.memory.write_u64(p * PAGE, tag);
            self.memory.write_u64(p * PAGE + PAGE - 8, !tag);
            self.shadow.tags.insert(p, tag);
        }
    }

    fn verify_tag(&self, pfn: u64) {
        let tag = self.shadow.tags[&pfn];
        let pa = pfn * PAGE;
        assert_eq!(
            (self.memory.read_u64(pa), self.memory.read_u64(pa + PAGE - 8)),
            (tag, !tag),
            "live page {pa:#x} was overwritten"
        );
    }

    /// Releases the block headed at `pfn` in the shadow, after checking
    /// its tags.
    fn release(&mut self, i: usize, pfn: u64, len: usize) {
        for p in pfn..pfn + len as u64 {
            self.verify_tag(p);
            self.shadow.tags.remove(&p);
            self.shadow.regions[i].set(p, PageState::Free);
        }
    }

    /// A refusal the shadow predicted: counted as misuse, nothing else
    /// changed (`drained`: except what draining the caches changes).
    fn refused(&mut self, before: PageStats, drained: bool) {
        self.shadow.misuse_reports += 1;
        let after = self.allocator.stats();
        let mut expected = PageStats {
            misuse_reports: before.misuse_reports + 1,
            ..before
        };
        if drained {
            assert_eq!(after.cached_pages, 0, "a refused alloc_at drains the caches");
            expected.cached_pages = 0;
            expected.largest_free_run = after.largest_free_run;
        }
        assert_eq!(after, expected, "a refusal changed the allocator (left: after)");
    }

    pub fn apply(&mut self, op: Op) {
        let a = &self.allocator;
        let before = a.stats();
        match op {
            Op::Cpu(cpu) => on_cpu(cpu),
            Op::Burst {
                n,
                alloc,
                pages,
                flags,
                seed,
            } => {
                for k in 0..n as u32 {
                    self.apply(if alloc {
                        Op::Alloc {
                            count: pages,
                            align: pages,
                            flags,
                        }
                    } else {
                        Op::Put(Target::Head(seed.wrapping_add(k)))
                    });
                }
            }
            Op::DrainCaches => {
                let drained = a.drain_caches();
                assert_eq!(drained as u64, before.cached_pages, "drain_caches()");
                let after = a.stats();
                assert_eq!(after.cached_pages, 0);
                assert_eq!(
                    after.largest_free_run,
                    self.shadow.largest_run(),
                    "largest_free_run after draining"
                );
            }
            Op::Alloc { count, align, flags } if !align.is_power_of_two() => {
                let flags = AllocFlags::from_bits(flags).unwrap();
                let real = a.alloc(count, align, flags);
                self.note("alloc", real.map(drop));
                assert_eq!(real, Err(PageStatus::EINVAL), "alloc({count}, {align}, {flags:?})");
                self.refused(before, false);
            }
            Op::Alloc { count, align, flags } => {
                let flags = AllocFlags::from_bits(flags).unwrap();
                let fits = self.shadow.fits(count, align, flags);
                let real = a.alloc(count, align, flags);
                self.note("alloc", real.map(drop));
                match real {
                    Ok(pa) => {
                        assert!(fits, "alloc({count}, {align}, {flags:?}) = {pa:?}, but no run fits");
                        let pa = pa.as_u64();
                        let (i, pfn) = self
                            .shadow
                            .locate(pa)
                            .unwrap_or_else(|_| panic!("alloc gave {pa:#x}: not usable memory"));
                        let r = &self.shadow.regions[i];
                        let end = pfn + count as u64;
                        assert_eq!(r.pool, flags.pool(), "alloc gave {pa:#x} from the wrong pool");
                        assert!(end <= r.end, "block {pa:#x} + {count} pages passes its region's end");
                        assert_eq!(pfn % align as u64, 0, "block {pa:#x} not aligned to {align} pages");
                        if flags.contains(AllocFlags::DMA32) {
                            assert!(end <= DMA32_PFN, "DMA32 block {pa:#x} + {count} pages above 4 GiB");
                        }
                        let p = PhysAddr::new(pa);
                        assert_eq!((a.refcount(p), a.block_pages(p)), (1, count), "new block {pa:#x}");
                        if flags.contains(AllocFlags::ZERO) {
                            assert!(
                                self.memory.is_zero(pa, count as u64 * PAGE),
                                "ZERO block {pa:#x} not zero"
                            );
                        }
                        if count > 1 && a.stats().cached_pages + count as u64 == before.cached_pages {
                            self.note("(a block taken from a cache)", Ok(()));
                        }
                        self.claim(i, pfn, count);
                    }
                    Err(PageStatus::ENOMEM) => {
                        assert!(!fits, "alloc({count}, {align}, {flags:?}) = ENOMEM, but a run fits");
                        self.shadow.failed_allocs += 1;
                        let after = a.stats();
                        assert_eq!(after.cached_pages, 0, "a failed search drains the caches");
                        assert_eq!(after.largest_free_run, self.shadow.largest_run());
                    }
                    Err(status) => panic!("alloc({count}, {align}, {flags:?}) = {status:?}"),
                }
            }
            Op::AllocAt { target, count, flags } => {
                let flags = AllocFlags::from_bits(flags).unwrap();
                let pa = self.resolve(target);
                let predicted = self.shadow.predict_alloc_at(pa, count, flags);
                let real = a.alloc_at(PhysAddr::new(pa), count, flags);
                self.note("alloc_at", real);
                assert_eq!(real, predicted.map(drop), "alloc_at({pa:#x}, {count}, {flags:?})");
                match predicted {
                    Ok((i, pfn)) => {
                        let p = PhysAddr::new(pa);
                        assert_eq!((a.refcount(p), a.block_pages(p)), (1, count));
                        if flags.contains(AllocFlags::ZERO) {
                            assert!(
                                self.memory.is_zero(pa, count as u64 * PAGE),
                                "ZERO block {pa:#x} not zero"
                            );
                        }
                        self.claim(i, pfn, count);
                    }
                    Err(status) => self.refused(before, status == PageStatus::EBUSY && before.cached_pages > 0),
                }
            }
            Op::Free(target) | Op::FreeSized(target, _) | Op::Put(target) => {
                let pa = self.resolve(target);
                let head = self.shadow.head(pa);
                let (name, real, predicted) = match op {
                    Op::Put(_) => ("put", a.put(PhysAddr::new(pa)), head.map(|h| h.2 == 1)),
                    Op::Free(_) => (
                        "free",
                        a.free(PhysAddr::new(pa)),
                        head.and_then(|h| if h.2 == 1 { Ok(true) } else { Err(PageStatus::ESHARED) }),
                    ),
                    _ => {
                        let Op::FreeSized(_, length) = op else { unreachable!() };
                        let len = head.map_or(1, |h| h.3);
                        let said = match length {
                            Length::Right => len,
                            Length::Wrong(d) => (len as isize + d as isize).max(0) as usize,
                        };
                        let predicted = head.and_then(|h| match h {
                            _ if said != h.3 => Err(PageStatus::EINVAL),
                            (_, _, 1, _) => Ok(true),
                            _ => Err(PageStatus::ESHARED),
                        });
                        ("free_sized", a.free_sized(PhysAddr::new(pa), said), predicted)
                    }
                };
                // Tags checked before the allocator may reuse the pages.
                if let (Ok(true), Ok((_, pfn, _, len))) = (predicted, head) {
                    for p in pfn..pfn + len as u64 {
                        self.verify_tag(p);
                    }
                }
                self.note(name, real);
                assert_eq!(real, predicted.map(drop), "{name}({pa:#x}) ({op:?})");
                match (predicted, head) {
                    (Ok(true), Ok((i, pfn, _, len))) => self.release(i, pfn, len),
                    (Ok(false), Ok((i, pfn, refs, len))) => {
                        self.shadow.regions[i].set(pfn, PageState::Head { refs: refs - 1, len })
                    }
                    (Err(_), _) => self.refused(before, false),
                    _ => unreachable!(),
                }
            }
            Op::Get(target) => {
                let pa = self.resolve(target);
                let head = self.shadow.head(pa);
                let real = a.get(PhysAddr::new(pa));
                self.note("get", real);
                assert_eq!(real, head.map(drop), "get({pa:#x})");
                match head {
                    Ok((i, pfn, refs, len)) => self.shadow.regions[i].set(pfn, PageState::Head { refs: refs + 1, len }),
                    Err(_) => self.refused(before, false),
                }
            }
            Op::Split(target) => {
                let pa = self.resolve(target);
                let head = self.shadow.head(pa);
                let predicted = head.and_then(|h| if h.2 == 1 { Ok(h) } else { Err(PageStatus::ESHARED) });
                let real = a.split(PhysAddr::new(pa));
                self.note("split", real);
                assert_eq!(real, predicted.map(drop), "split({pa:#x})");
                match predicted {
                    Ok((i, pfn, _, len)) => {
                        for p in pfn..pfn + len as u64 {
                            self.shadow.regions[i].set(p, PageState::Head { refs: 1, len: 1 });
                        }
                    }
                    Err(_) => self.refused(before, false),
                }
            }
        }
        self.verify();
        let cached = self.allocator.stats().cached_pages;
        if cached < before.cached_pages
            && !matches!(
                op,
                Op::DrainCaches | Op::Alloc { .. } | Op::AllocAt { .. } | Op::Burst { .. }
            )
        {
            self.note("(a magazine flushed on a free)", Ok(()));
        }
        if cached >= 24 {
            self.note("(24+ pages cached)", Ok(()));
        }
    }

    /// The invariants after every step.
    fn verify(&self) {
        let a = &self.allocator;
        assert_eq!(a.check(), Ok(()), "check()");
        let stats = a.stats();
        let shadow = &self.shadow;
        assert_eq!(stats.used_pages, shadow.live_pages(), "used_pages: {stats:?}");
        assert_eq!(
            stats.free_pages + stats.used_pages + stats.metadata_pages,
            stats.total_pages,
            "{stats:?}"
        );
        assert!(stats.cached_pages <= stats.free_pages, "{stats:?}");
        assert_eq!(
            stats.user_free_pages,
            shadow.user_not_live(),
            "user_free_pages: {stats:?}"
        );
        assert_eq!(stats.misuse_reports, shadow.misuse_reports, "misuse_reports");
        assert_eq!(stats.failed_allocs, shadow.failed_allocs, "failed_allocs");
        // Cached pages are in no free run until drained.
        assert!(stats.largest_free_run <= shadow.largest_run(), "{stats:?}");
        assert!(stats.high_water_pages >= stats.used_pages, "{stats:?}");
        // The live blocks are exactly the shadow's (no cached page among them).
        let mut live = BTreeSet::new();
        a.for_each_live(|block| {
            live.insert((block.pa.as_u64(), block.refcount, block.pages));
        });
        let expected: BTreeSet<_> = shadow.heads().into_iter().collect();
        assert_eq!(live, expected, "live blocks (left: allocator)");
        for &pfn in shadow.tags.keys() {
            self.verify_tag(pfn);
        }
    }

    /// Releases every block, drains the caches and checks that the
    /// allocator is back to its fresh state.
    pub fn finish(&mut self) {
        for (pa, refs, len) in self.shadow.heads() {
            let (i, pfn) = self.shadow.locate(pa).unwrap();
            for p in pfn..pfn + len as u64 {
                self.verify_tag(p);
            }
            for _ in 0..refs {
                assert_eq!(self.allocator.put(PhysAddr::new(pa)), Ok(()), "put({pa:#x}) at the end");
            }
            self.release(i, pfn, len);
        }
        self.verify();
        let cached = self.allocator.stats().cached_pages;
        assert_eq!(self.allocator.drain_caches() as u64, cached);
        self.verify();
        let stats = self.allocator.stats();
        assert_eq!(stats.used_pages, 0);
        assert_eq!(stats.cached_pages, 0);
        assert_eq!(stats.free_pages, stats.total_pages - stats.metadata_pages);
        assert_eq!(
            stats.largest_free_run, self.fresh_largest_run,
            "largest_free_run at the end"
        );
    }
}
