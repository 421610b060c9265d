//! A reference model of kpalloc and a differential harness that runs the
//! same operations against the model and a real [`Allocator`], comparing
//! every answer, the statistics and `check()` after each step.
//!
//! Shared, not copied: `tests/model_proptest.rs` drives it with proptest,
//! `fuzz/fuzz_targets/differential.rs` includes this file with `#[path]`
//! and drives it from libFuzzer bytes.
//!
//! The model is deliberately naive: one entry per page of every region,
//! first fit by a plain scan in address order, no bitmaps, no summaries.
//! The only thing it takes from the allocator is how many metadata pages a
//! new region gets (and its metadata bytes): that is a layout choice, not
//! behaviour, and it is checked against bounds (at least one 4-byte slot per
//! usable page, at most about 4.2 bytes per page plus a header).
#![allow(dead_code)]

use std::alloc::{dealloc, Layout};
use std::fmt::Write as _;

use kpalloc::{AllocFlags, Allocator, Config, DebugFlags, NoHooks, PageStats, PageStatus, Pool};
use x86_64::PhysAddr;

pub const PAGE: u64 = 4096;

#[path = "../common/placement.rs"]
mod placement;
use placement::boot_ram;
/// First frame at 4 GiB: DMA32 blocks end at or below it.
pub const DMA32_PFN: u64 = 1 << 20;
/// Longest block (the refcount/length slot's limit).
pub const MAX_BLOCK_PAGES: usize = 0x7FFF_FFFF;

// ---------------------------------------------------------------- memory

/// A page-aligned buffer standing for physical memory `[phys_base,
/// phys_base + pages * 4096)`; freed on drop (drop the allocator first).
pub struct FakeMemory {
    ptr: *mut u8,
    layout: Layout,
    pub phys_base: u64,
    pub pages: u64,
    pub phys_offset: u64,
}

impl FakeMemory {
    pub fn new(phys_base: u64, pages: u64) -> Self {
        assert!(phys_base % PAGE == 0 && pages > 0);
        let (ptr, layout) = boot_ram(phys_base, pages * PAGE);
        let addr = ptr.expose_provenance() as u64;
        FakeMemory {
            ptr,
            layout,
            phys_base,
            pages,
            phys_offset: addr.wrapping_sub(phys_base),
        }
    }

    pub fn bytes(&self) -> u64 {
        self.pages * PAGE
    }

    pub fn end(&self) -> u64 {
        self.phys_base + self.bytes()
    }

    /// The byte at physical address `pa` (inside the buffer), as a pointer
    /// derived from the buffer (not from the integer).
    fn at(&self, pa: u64) -> *mut u8 {
        assert!(pa >= self.phys_base && pa < self.end());
        self.ptr.wrapping_add((pa - self.phys_base) as usize)
    }

    pub fn read_u64(&self, pa: u64) -> u64 {
        // SAFETY: inside the buffer; only called on pages the test owns.
        unsafe { self.at(pa).cast::<u64>().read_unaligned() }
    }

    pub fn write_u64(&self, pa: u64, value: u64) {
        // SAFETY: as read_u64.
        unsafe { self.at(pa).cast::<u64>().write_unaligned(value) }
    }

    pub fn is_zero(&self, pa: u64, bytes: u64) -> bool {
        // SAFETY: inside the buffer, a block the test owns.
        let slice = unsafe { std::slice::from_raw_parts(self.at(pa), bytes as usize) };
        slice.iter().all(|&b| b == 0)
    }
}

impl Drop for FakeMemory {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

// ---------------------------------------------------------------- model

/// One page of a region, as the specification describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageState {
    Free,
    /// First page of a block of `len` pages, with its reference count.
    Head {
        refs: u32,
        len: usize,
    },
    /// Another page of the block headed `back` pages earlier.
    Interior {
        back: usize,
    },
}

#[derive(Clone, Debug)]
pub struct ModelRegion {
    /// First page (metadata starts here), first usable page, one past last.
    pub start: u64,
    pub usable: u64,
    pub end: u64,
    pub pool: Pool,
    /// One entry per usable page, `usable..end`.
    pub pages: Vec<PageState>,
}

impl ModelRegion {
    pub fn state(&self, pfn: u64) -> PageState {
        self.pages[(pfn - self.usable) as usize]
    }
    pub fn set(&mut self, pfn: u64, state: PageState) {
        self.pages[(pfn - self.usable) as usize] = state;
    }
    pub fn free_pages(&self) -> u64 {
        self.pages.iter().filter(|p| **p == PageState::Free).count() as u64
    }
    pub fn largest_free_run(&self) -> u64 {
        let (mut best, mut run) = (0, 0);
        for page in &self.pages {
            run = if *page == PageState::Free { run + 1 } else { 0 };
            best = best.max(run);
        }
        best
    }
}

/// The heads of the blocks of `regions`, in their order: (address,
/// reference count, length).
pub fn block_heads(regions: &[ModelRegion]) -> Vec<(u64, u32, usize)> {
    let mut heads = Vec::new();
    for r in regions {
        for (k, page) in r.pages.iter().enumerate() {
            if let PageState::Head { refs, len } = *page {
                heads.push(((r.usable + k as u64) * PAGE, refs, len));
            }
        }
    }
    heads
}

/// The physical address of the `n`-th free usable page of `regions`
/// (counting modulo their number), if any.
pub fn nth_free_page(regions: &[ModelRegion], n: u32) -> Option<u64> {
    let free: Vec<u64> = regions
        .iter()
        .flat_map(|r| {
            r.pages
                .iter()
                .enumerate()
                .filter(|(_, p)| **p == PageState::Free)
                .map(move |(k, _)| (r.usable + k as u64) * PAGE)
        })
        .collect();
    free.get(n as usize % free.len().max(1)).copied()
}

/// The reference model: regions sorted by address, one state per page.
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub regions: Vec<ModelRegion>,
    pub metadata_pages: u64,
    pub metadata_bytes: u64,
    pub high_water: u64,
    pub failed_allocs: u64,
    pub misuse_reports: u64,
}

/// Where an address lies, for the model.
enum Located {
    Page(usize, u64),
    Refused(PageStatus),
}

impl Model {
    pub fn used_pages(&self) -> u64 {
        self.regions.iter().map(|r| r.pages.len() as u64 - r.free_pages()).sum()
    }

    pub fn stats(&self) -> PageStats {
        let mut stats = PageStats {
            metadata_pages: self.metadata_pages,
            regions: self.regions.len() as u64,
            high_water_pages: self.high_water,
            failed_allocs: self.failed_allocs,
            misuse_reports: self.misuse_reports,
            metadata_bytes: self.metadata_bytes,
            ..PageStats::default()
        };
        for r in &self.regions {
            let free = r.free_pages();
            stats.total_pages += r.end - r.start;
            stats.used_pages += r.pages.len() as u64 - free;
            stats.largest_free_run = stats.largest_free_run.max(r.largest_free_run());
            if r.pool == Pool::User {
                stats.user_free_pages += free;
            }
        }
        stats.free_pages = stats.total_pages - stats.metadata_pages - stats.used_pages;
        stats
    }

    /// Counts a refusal as the allocator does: everything but ENOMEM is misuse.
    fn refuse<T>(&mut self, status: PageStatus) -> Result<T, PageStatus> {
        if status != PageStatus::ENOMEM {
            self.misuse_reports += 1;
        }
        Err(status)
    }

    fn locate(&self, pa: u64) -> Located {
        if pa % PAGE != 0 {
            return Located::Refused(PageStatus::ENOTMANAGED);
        }
        let pfn = pa / PAGE;
        match self.regions.iter().position(|r| r.start <= pfn && pfn < r.end) {
            Some(i) if pfn >= self.regions[i].usable => Located::Page(i, pfn),
            _ => Located::Refused(PageStatus::ENOTMANAGED),
        }
    }

    /// The state of the page at `pa`, if it is a usable page.
    pub fn page(&self, pa: u64) -> Option<PageState> {
        match self.locate(pa) {
            Located::Page(i, pfn) => Some(self.regions[i].state(pfn)),
            Located::Refused(_) => None,
        }
    }

    /// What `add_region(start, end, pool)` answers. `Ok(first, last)` means
    /// the region of whole pages `[first, last)` is accepted; the caller
    /// then calls [`Model::accept_region`] with the metadata size.
    pub fn predict_add_region(&self, start: u64, end: u64) -> Result<(u64, u64), PageStatus> {
        if end <= start {
            return Err(PageStatus::EINVAL);
        }
        let first = start.div_ceil(PAGE);
        let last = end / PAGE;
        if first >= last {
            return Err(PageStatus::ETOOSMALL);
        }
        if self.regions.iter().any(|r| r.start < last && first < r.end) {
            return Err(PageStatus::EOVERLAP);
        }
        // Claim checked here: two whole pages always hold the metadata of a
        // small region plus one usable page.
        if last - first < 2 {
            return Err(PageStatus::ETOOSMALL);
        }
        Ok((first, last))
    }

    pub fn refuse_region(&mut self, status: PageStatus) {
        let _ = self.refuse::<()>(status);
    }

    pub fn accept_region(&mut self, first: u64, last: u64, pool: Pool, meta_pages: u64, meta_bytes: u64) {
        let pages = last - first;
        let regions = self.regions.len() as u64 + 1;
        assert!(
            meta_pages >= 1 && meta_pages < pages,
            "metadata {meta_pages} of {pages} pages"
        );
        // At least a 4-byte slot per usable page; at most ~4.125 bytes per
        // page of its bitmap words (rounded out to 64), a header and the table.
        assert!(meta_pages * PAGE >= 4 * (pages - meta_pages), "metadata too small");
        let bound = 1 + ((pages + 128) * 33 / 8 + 16 * regions + 512).div_ceil(PAGE);
        assert!(meta_pages <= bound, "metadata {meta_pages} pages > {bound} for {pages}");
        // The fewest pages that hold it: its bytes fill all but the last, or
        // all but the last two where one page fewer would have to cover the
        // pages from the 64-page boundary below, a bitmap word more (at
        // most 64 slots and tags, under a page).
        assert!(
            meta_bytes <= meta_pages * PAGE && meta_bytes + PAGE > (meta_pages - 1) * PAGE,
            "{meta_bytes} metadata bytes in {meta_pages} pages"
        );
        let region = ModelRegion {
            start: first,
            usable: first + meta_pages,
            end: last,
            pool,
            pages: vec![PageState::Free; (pages - meta_pages) as usize],
        };
        let at = self.regions.partition_point(|r| r.start < first);
        self.regions.insert(at, region);
        self.metadata_pages += meta_pages;
        self.metadata_bytes += meta_bytes;
    }

    fn claim(&mut self, region: usize, pfn: u64, count: usize) {
        let r = &mut self.regions[region];
        r.set(pfn, PageState::Head { refs: 1, len: count });
        for i in 1..count {
            r.set(pfn + i as u64, PageState::Interior { back: i });
        }
        self.high_water = self.high_water.max(self.used_pages());
    }

    /// First fit: the lowest aligned run of free pages, regions of the pool
    /// in address order. Changes nothing: see [`Model::alloc`].
    pub fn predict_alloc(&self, count: usize, align: usize, flags: AllocFlags) -> Result<(usize, u64), PageStatus> {
        if count == 0 || !align.is_power_of_two() {
            return Err(PageStatus::EINVAL);
        }
        if count > MAX_BLOCK_PAGES {
            return Err(PageStatus::ENOMEM);
        }
        let dma32 = flags.contains(AllocFlags::DMA32);
        for (i, r) in self.regions.iter().enumerate() {
            if r.pool != flags.pool() {
                continue;
            }
            let Some(mut pfn) = r.usable.checked_next_multiple_of(align as u64) else {
                continue;
            };
            while let Some(end) = pfn.checked_add(count as u64) {
                if end > r.end || (dma32 && end > DMA32_PFN) {
                    break;
                }
                if (pfn..end).all(|p| r.state(p) == PageState::Free) {
                    return Ok((i, pfn));
                }
                let Some(next) = pfn.checked_add(align as u64) else {
                    break;
                };
                pfn = next;
            }
        }
        Err(PageStatus::ENOMEM)
    }

    pub fn alloc(&mut self, count: usize, align: usize, flags: AllocFlags) -> Result<u64, PageStatus> {
        match self.predict_alloc(count, align, flags) {
            Ok((i, pfn)) => {
                self.claim(i, pfn, count);
                Ok(pfn * PAGE)
            }
            Err(status) => {
                if status == PageStatus::ENOMEM {
                    self.failed_allocs += 1;
                }
                self.refuse(status)
            }
        }
    }

    pub fn alloc_at(&mut self, pa: u64, count: usize, flags: AllocFlags) -> Result<(), PageStatus> {
        if pa % PAGE != 0 || count == 0 || count > MAX_BLOCK_PAGES {
            return self.refuse(PageStatus::EINVAL);
        }
        let (i, pfn) = match self.locate(pa) {
            Located::Page(i, pfn) => (i, pfn),
            Located::Refused(status) => return self.refuse(status),
        };
        let r = &self.regions[i];
        let end = match pfn.checked_add(count as u64) {
            Some(end) if end <= r.end => end,
            _ => return self.refuse(PageStatus::ENOTMANAGED),
        };
        if r.pool != flags.pool() || (flags.contains(AllocFlags::DMA32) && end > DMA32_PFN) {
            return self.refuse(PageStatus::EINVAL);
        }
        if !(pfn..end).all(|p| r.state(p) == PageState::Free) {
            return self.refuse(PageStatus::EBUSY);
        }
        self.claim(i, pfn, count);
        Ok(())
    }

    /// The head page, region and block of `pa`, or why it is not one.
    fn head(&self, pa: u64) -> Result<(usize, u64, u32, usize), PageStatus> {
        match self.locate(pa) {
            Located::Refused(status) => Err(status),
            Located::Page(i, pfn) => match self.regions[i].state(pfn) {
                PageState::Free => Err(PageStatus::ENOTALLOCATED),
                PageState::Interior { .. } => Err(PageStatus::ENOTHEAD),
                PageState::Head { refs, len } => Ok((i, pfn, refs, len)),
            },
        }
    }

    fn release(&mut self, i: usize, pfn: u64, len: usize) {
        for p in pfn..pfn + len as u64 {
            self.regions[i].set(p, PageState::Free);
        }
    }

    pub fn free(&mut self, pa: u64) -> Result<(), PageStatus> {
        match self.head(pa) {
            Err(status) => self.refuse(status),
            Ok((_, _, refs, _)) if refs > 1 => self.refuse(PageStatus::ESHARED),
            Ok((i, pfn, _, len)) => {
                self.release(i, pfn, len);
                Ok(())
            }
        }
    }

    pub fn get(&mut self, pa: u64) -> Result<(), PageStatus> {
        match self.head(pa) {
            Err(status) => self.refuse(status),
            Ok((_, _, 0x7FFF_FFFF, _)) => self.refuse(PageStatus::EOVERFLOW),
            Ok((i, pfn, refs, len)) => {
                self.regions[i].set(pfn, PageState::Head { refs: refs + 1, len });
                Ok(())
            }
        }
    }

    pub fn put(&mut self, pa: u64) -> Result<(), PageStatus> {
        match self.head(pa) {
            Err(status) => self.refuse(status),
            Ok((i, pfn, 1, len)) => {
                self.release(i, pfn, len);
                Ok(())
            }
            Ok((i, pfn, refs, len)) => {
                self.regions[i].set(pfn, PageState::Head { refs: refs - 1, len });
                Ok(())
            }
        }
    }

    pub fn split(&mut self, pa: u64) -> Result<(), PageStatus> {
        match self.head(pa) {
            Err(status) => self.refuse(status),
            Ok((_, _, refs, _)) if refs > 1 => self.refuse(PageStatus::ESHARED),
            Ok((i, pfn, _, len)) => {
                for p in pfn..pfn + len as u64 {
                    self.regions[i].set(p, PageState::Head { refs: 1, len: 1 });
                }
                Ok(())
            }
        }
    }

    pub fn refcount(&self, pa: u64) -> u32 {
        self.head(pa).map_or(0, |(_, _, refs, _)| refs)
    }

    pub fn block_pages(&self, pa: u64) -> usize {
        self.head(pa).map_or(0, |(_, _, _, len)| len)
    }

    /// Heads of allocated blocks, in address order.
    pub fn heads(&self) -> Vec<(u64, u32, usize)> {
        block_heads(&self.regions)
    }
}

// ---------------------------------------------------------------- operations

/// An address an operation is aimed at, resolved against the model's state
/// when the operation runs, so that random sequences hit real blocks.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// The n-th allocated block's head (mod the number of blocks).
    Head(u32),
    /// A page after the head inside the n-th block (its head if one page).
    Interior(u32, u32),
    /// The n-th block's head plus 1..4095 bytes.
    Unaligned(u32, u16),
    /// A metadata page of the n-th region.
    Metadata(u32, u32),
    /// The n-th free usable page.
    FreePage(u32),
    /// Any page of the memory (in a region or not).
    AnyPage(u32),
    /// A page outside the memory: after it, or just before it.
    Outside(u32),
    /// Physical address 0.
    Zero,
}

#[derive(Clone, Copy, Debug)]
pub enum Op {
    /// A region of memory pages `[start, start + pages)`, its ends moved by
    /// the byte offsets, clamped to the memory (so it may be empty, reversed,
    /// ragged or overlapping).
    AddRegion {
        start: u32,
        pages: u32,
        start_off: i16,
        end_off: i16,
        user: bool,
    },
    /// `assert` adds PAGE_ALLOC_ASSERT only when the model predicts success.
    Alloc {
        count: usize,
        align: usize,
        flags: u32,
        assert: bool,
    },
    AllocAt {
        target: Target,
        count: usize,
        flags: u32,
    },
    Free(Target),
    Get(Target),
    Put(Target),
    Split(Target),
    Refcount(Target),
    BlockPages(Target),
}

/// The physical bases the harness chooses from: page 0, 1 MiB, an odd page
/// (not 64-page aligned), just below 4 GiB (DMA32 edge), high memory.
pub const PHYS_BASES: [u64; 5] = [0, 0x10_0000, 0x10_3000, (1 << 32) - 0x4d000, 1 << 40];

/// The physical bases of `bases` a test process can fake memory at: a
/// 32-bit one has no kernel virtual addresses near 4 GiB and above, so
/// only the low ones.
pub fn fakeable(bases: &[u64]) -> Vec<u64> {
    let low = |base: u64| base < 1 << 30;
    bases
        .iter()
        .copied()
        .filter(|&base| cfg!(target_pointer_width = "64") || low(base))
        .collect()
}

/// The model and an allocator over the same fake memory, in lock step.
pub struct Differential {
    // Dropped first: nothing refers to the memory once it is gone.
    pub allocator: Allocator<NoHooks>,
    pub model: Model,
    pub memory: FakeMemory,
    /// Generation counter for the tags written into allocated pages.
    tag: u64,
    /// Every step checks each usable page's refcount and block length
    /// through the API when the memory has at most this many pages.
    pub full_compare_pages: u64,
    pub log: Option<String>,
    /// How often each operation got each answer ("free ENOTHEAD": 12).
    pub outcomes: std::collections::BTreeMap<String, u64>,
}

impl Differential {
    pub fn new(phys_base: u64, pages: u64) -> Self {
        let memory = FakeMemory::new(phys_base, pages);
        let allocator = Allocator::new(
            Config {
                phys_offset: memory.phys_offset,
                debug: DebugFlags::NONE,
            },
            NoHooks,
        );
        Differential {
            allocator,
            model: Model::default(),
            memory,
            tag: 0,
            full_compare_pages: 2048,
            log: None,
            outcomes: Default::default(),
        }
    }

    fn resolve(&self, target: Target) -> u64 {
        let mem = &self.memory;
        let heads = || self.model.heads();
        match target {
            Target::Head(n) => {
                let heads = heads();
                heads
                    .get(n as usize % heads.len().max(1))
                    .map_or(mem.phys_base, |h| h.0)
            }
            Target::Interior(n, off) => {
                let heads = heads();
                heads
                    .get(n as usize % heads.len().max(1))
                    .map_or(mem.phys_base + PAGE, |&(pa, _, len)| {
                        if len > 1 {
                            pa + (1 + off as u64 % (len as u64 - 1)) * PAGE
                        } else {
                            pa
                        }
                    })
            }
            Target::Unaligned(n, off) => {
                let heads = heads();
                let pa = heads
                    .get(n as usize % heads.len().max(1))
                    .map_or(mem.phys_base, |h| h.0);
                pa + 1 + off as u64 % (PAGE - 1)
            }
            Target::Metadata(n, k) => {
                let regions = &self.model.regions;
                match regions.get(n as usize % regions.len().max(1)) {
                    Some(r) => (r.start + k as u64 % (r.usable - r.start)) * PAGE,
                    None => mem.phys_base,
                }
            }
            Target::FreePage(n) => nth_free_page(&self.model.regions, n).unwrap_or(mem.phys_base),
            Target::AnyPage(n) => mem.phys_base + (n as u64 % mem.pages) * PAGE,
            Target::Outside(n) => {
                if n % 2 == 0 || mem.phys_base < PAGE {
                    mem.end() + (n as u64 / 2 % 4096) * PAGE
                } else {
                    mem.phys_base - PAGE * (1 + (n as u64 / 2) % (mem.phys_base / PAGE).min(4096))
                }
            }
            Target::Zero => 0,
        }
    }

    fn note(&mut self, args: std::fmt::Arguments) {
        let text = args.to_string();
        let name = text.split('(').next().unwrap_or("");
        let answer = match text.rsplit_once(" = ") {
            Some((_, r)) if r.starts_with("Ok") => "Ok",
            Some((_, r)) => r.trim_start_matches("Err(").trim_end_matches(')'),
            None => "?",
        };
        *self.outcomes.entry(format!("{name} {answer}")).or_default() += 1;
        if let Some(log) = &mut self.log {
            let _ = log.write_fmt(args);
            log.push('\n');
        }
    }

    /// Writes a fresh tag into the first and last 8 bytes of every page of a
    /// new block (after checking that a ZERO block is all zeros).
    fn on_allocated(&mut self, pa: u64, count: usize, flags: AllocFlags) {
        if flags.contains(AllocFlags::ZERO) {
            assert!(
                self.memory.is_zero(pa, count as u64 * PAGE),
                "PAGE_ALLOC_ZERO block at {pa:#x} ({count} pages) is not zero"
            );
        }
        self.tag += 1;
        for i in 0..count as u64 {
            let value = self.tag << 32 | i;
            self.memory.write_u64(pa + i * PAGE, value);
            self.memory.write_u64(pa + i * PAGE + PAGE - 8, !value);
        }
    }

    /// Checks that the tags of the pages of the block at `pa` are intact:
    /// the allocator wrote nothing into pages it had handed out.
    fn verify_tags(&self, pa: u64, len: usize) {
        // After a split each page is its own block, so compare each page
        // with its own first word, and the pair of words of a page together.
        for i in 0..len as u64 {
            let head = self.memory.read_u64(pa + i * PAGE);
            let tail = self.memory.read_u64(pa + i * PAGE + PAGE - 8);
            assert_eq!(
                head,
                !tail,
                "page {:#x} of an allocated block was overwritten",
                pa + i * PAGE
            );
        }
    }

    /// The block that `free`/`put` at `pa` is predicted to release, if any.
    fn releasing(&self, pa: u64) -> Option<usize> {
        match self.model.page(pa) {
            Some(PageState::Head { refs: 1, len }) => Some(len),
            _ => None,
        }
    }

    pub fn apply(&mut self, op: &Op) {
        match *op {
            Op::AddRegion {
                start,
                pages,
                start_off,
                end_off,
                user,
            } => {
                let mem = &self.memory;
                let from = (start as u64 % mem.pages) * PAGE;
                let to = from + (pages as u64) * PAGE;
                let clamp = |x: i64| x.clamp(0, mem.bytes() as i64) as u64;
                let s = mem.phys_base + clamp(from as i64 + start_off as i64);
                let e = mem.phys_base + clamp(to as i64 + end_off as i64);
                let pool = if user { Pool::User } else { Pool::Kernel };
                let before = self.allocator.stats();
                // SAFETY: the range lies inside the fake memory, which
                // outlives the allocator; overlaps are refused by design and
                // the model predicts them.
                let real = unsafe { self.allocator.add_region(PhysAddr::new(s), PhysAddr::new(e), pool) };
                let after = self.allocator.stats();
                let predicted = self.model.predict_add_region(s, e);
                self.note(format_args!("add_region({s:#x}, {e:#x}, {pool:?}) = {real:?}"));
                match (predicted, real) {
                    (Ok((first, last)), Ok(())) => self.model.accept_region(
                        first,
                        last,
                        pool,
                        after.metadata_pages - before.metadata_pages,
                        after.metadata_bytes - before.metadata_bytes,
                    ),
                    (Err(p), Err(r)) if p == r => self.model.refuse_region(r),
                    (p, r) => panic!("add_region({s:#x}, {e:#x}, {pool:?}): model {p:?}, allocator {r:?}"),
                }
            }
            Op::Alloc {
                count,
                align,
                flags,
                assert,
            } => {
                let mut flags = AllocFlags::from_bits(flags & 0xe).unwrap();
                if assert && self.model.predict_alloc(count, align, flags).is_ok() {
                    flags = flags | AllocFlags::ASSERT;
                }
                let real = self.allocator.alloc(count, align, flags).map(|pa| pa.as_u64());
                self.note(format_args!("alloc({count}, {align}, {flags:?}) = {real:x?}"));
                let predicted = self.model.alloc(count, align, flags);
                assert_eq!(real, predicted, "alloc({count}, {align}, {flags:?})");
                if let Ok(pa) = real {
                    self.on_allocated(pa, count, flags);
                }
            }
            Op::AllocAt { target, count, flags } => {
                let flags = AllocFlags::from_bits(flags & 0xe).unwrap();
                let pa = self.resolve(target);
                let real = self.allocator.alloc_at(PhysAddr::new(pa), count, flags);
                self.note(format_args!("alloc_at({pa:#x}, {count}, {flags:?}) = {real:?}"));
                let predicted = self.model.alloc_at(pa, count, flags);
                assert_eq!(real, predicted, "alloc_at({pa:#x}, {count}, {flags:?})");
                if real.is_ok() {
                    self.on_allocated(pa, count, flags);
                }
            }
            Op::Free(target) | Op::Put(target) => {
                let put = matches!(op, Op::Put(_));
                let pa = self.resolve(target);
                if let Some(len) = self.releasing(pa) {
                    self.verify_tags(pa, len);
                }
                let real = if put {
                    self.allocator.put(PhysAddr::new(pa))
                } else {
                    self.allocator.free(PhysAddr::new(pa))
                };
                let name = if put { "put" } else { "free" };
                self.note(format_args!("{name}({pa:#x}) = {real:?}"));
                let predicted = if put { self.model.put(pa) } else { self.model.free(pa) };
                assert_eq!(real, predicted, "{name}({pa:#x})");
            }
            Op::Get(target) => {
                let pa = self.resolve(target);
                let real = self.allocator.get(PhysAddr::new(pa));
                self.note(format_args!("get({pa:#x}) = {real:?}"));
                assert_eq!(real, self.model.get(pa), "get({pa:#x})");
            }
            Op::Split(target) => {
                let pa = self.resolve(target);
                let real = self.allocator.split(PhysAddr::new(pa));
                self.note(format_args!("split({pa:#x}) = {real:?}"));
                assert_eq!(real, self.model.split(pa), "split({pa:#x})");
            }
            Op::Refcount(target) => {
                let pa = self.resolve(target);
                assert_eq!(
                    self.allocator.refcount(PhysAddr::new(pa)),
                    self.model.refcount(pa),
                    "refcount({pa:#x})"
                );
            }
            Op::BlockPages(target) => {
                let pa = self.resolve(target);
                assert_eq!(
                    self.allocator.block_pages(PhysAddr::new(pa)),
                    self.model.block_pages(pa),
                    "block_pages({pa:#x})"
                );
            }
        }
        self.compare();
    }

    /// The invariants after every step: check() passes, the statistics are
    /// exactly the model's, and (for small memories) every usable page has
    /// the model's reference count and block length.
    pub fn compare(&self) {
        let a = &self.allocator;
        assert_eq!(a.check(), Ok(()), "check() failed");
        // check() must not count as misuse when it passes: compare after it.
        assert_eq!(a.stats(), self.model.stats(), "stats differ (left: allocator)");
        if self.memory.pages <= self.full_compare_pages {
            self.compare_pages();
        }
    }

    pub fn compare_pages(&self) {
        let a = &self.allocator;
        for r in &self.model.regions {
            for (k, page) in r.pages.iter().enumerate() {
                let pa = (r.usable + k as u64) * PAGE;
                let (refs, len) = match *page {
                    PageState::Head { refs, len } => (refs, len),
                    _ => (0, 0),
                };
                let p = PhysAddr::new(pa);
                assert_eq!((a.refcount(p), a.block_pages(p)), (refs, len), "page {pa:#x}: {page:?}");
            }
            // Metadata pages are never blocks.
            assert_eq!(a.refcount(PhysAddr::new(r.start * PAGE)), 0);
        }
    }

    /// Releases every block (through put, as often as its count; compared
    /// answer by answer, the full comparison once at the end), then checks
    /// that the allocator is back to all pages free.
    pub fn drain(&mut self) {
        for (pa, refs, len) in self.model.heads() {
            self.verify_tags(pa, len);
            for _ in 0..refs {
                let real = self.allocator.put(PhysAddr::new(pa));
                assert_eq!(real, self.model.put(pa), "put({pa:#x}) while draining");
            }
        }
        self.compare();
        let stats = self.allocator.stats();
        assert_eq!(stats.used_pages, 0);
        assert_eq!(stats.free_pages, stats.total_pages - stats.metadata_pages);
    }
}
