//! The allocator: an instance with no global state, safe code over the
//! regions' metadata. The C ABI's global and the Rust page types use one.

#![deny(unsafe_code)]

use core::ffi::CStr;
use core::panic::Location;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use spin::Mutex;
use x86_64::PhysAddr;

use crate::cache::{
    is_cacheable_block, is_cached_block_length, CacheGuard, Cached, CachedBlock, CachedPage, CpuCache, CpuCaches,
    HeldMagazines, BATCH_PAGES,
};
use crate::message::{Message, TextWriter};
use crate::refcount::{self, Put};
use crate::region::{Region, RegionLayout, RegionTable, Slot, CACHED, MAX_BLOCK_PAGES};
use crate::status::PageStatus;
use crate::sync::{LockToken, OwnLines, Published};
use crate::tag::Tag;
use crate::types::{AllocFlags, DebugFlags, Pfn, Pool, KPALLOC_PAGE_SIZE};

/// First frame at or above 4 GiB: `PAGE_ALLOC_DMA32` blocks end below it.
const DMA32_LIMIT: Pfn = Pfn::containing(1 << 32);

/// What the allocator calls out to. Every method has a do-nothing default.
pub trait Hooks: Sync {
    /// Masks interrupts and returns what `irq_restore` needs to undo it;
    /// called before the allocator's lock is taken.
    fn irq_save(&self) -> u64 {
        0
    }
    /// Undoes the matching `irq_save`, after the lock is released.
    fn irq_restore(&self, _saved: u64) {}
    /// Stops the kernel (a failed `PAGE_ALLOC_ASSERT` allocation). Never
    /// called with the lock held, but for an internal error (a kpalloc bug)
    /// in the C library (feature `panic-handler`), whose panic handler calls
    /// the global allocator's hook wherever the bug struck.
    fn panic(&self, _message: &CStr) -> ! {
        crate::raw::halt()
    }
    /// Told once about every call refused as misuse (every refusal but
    /// `ENOMEM`), with its status and the address the caller passed (0
    /// where there was none), and about a free page found with its poison
    /// pattern overwritten (`ECORRUPT`, though the allocation that found it
    /// goes ahead). Never called with the lock held.
    fn on_misuse(&self, _status: PageStatus, _addr: usize) {}
    /// The number of the CPU making the call, to pick its page cache (see
    /// [`Allocator::with_cpu_caches`]). It may be stale (the thread may
    /// migrate) or shared: it only picks a cache, never decides correctness.
    fn cpu_id(&self) -> usize {
        0
    }
}

/// Hooks for a host or a kernel without interrupts: all defaults.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHooks;
impl Hooks for NoHooks {}

/// Counters of one allocator, all in pages unless named otherwise.
///
/// `free_pages = total_pages - metadata_pages - used_pages` always holds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageStats {
    /// Every page of every region, metadata included.
    pub total_pages: u64,
    /// Pages that can be allocated now.
    pub free_pages: u64,
    /// Pages in allocated blocks.
    pub used_pages: u64,
    /// Pages holding the regions' metadata.
    pub metadata_pages: u64,
    /// Regions added.
    pub regions: u64,
    /// Longest run of free pages in one region (pages in per-CPU caches
    /// are not part of any run until drained).
    pub largest_free_run: u64,
    /// The most pages ever in use at once (counting the pages held in
    /// per-CPU caches as in use).
    pub high_water_pages: u64,
    /// Allocations refused for lack of memory (`PAGE_ENOMEM`).
    pub failed_allocs: u64,
    /// Calls refused as misuse, and free pages found with their poison
    /// overwritten (each also reported through `on_misuse`).
    pub misuse_reports: u64,
    /// Bytes of metadata actually used (bitmaps, summaries, counts, headers),
    /// for the metadata cost per page: `metadata_bytes / total_pages`.
    pub metadata_bytes: u64,
    /// Free pages of the user pool (included in `free_pages`).
    pub user_free_pages: u64,
    /// Free pages held in per-CPU caches (included in `free_pages`).
    pub cached_pages: u64,
}

/// Run-length encodes page states into `runs` lines of a dump.
struct RunWriter<'w, 'b> {
    out: &'w mut TextWriter<'b>,
    state: u8,
    length: u64,
    on_line: u32,
}

impl RunWriter<'_, '_> {
    const RUNS_PER_LINE: u32 = 16;

    fn push(&mut self, state: u8, pages: u64) {
        if state == self.state {
            self.length += pages;
            return;
        }
        self.flush();
        self.state = state;
        self.length = pages;
    }

    fn flush(&mut self) {
        if self.length == 0 {
            return;
        }
        if self.on_line == 0 {
            self.out.text("runs");
        }
        let letter = [self.state];
        self.out
            .text(" ")
            .text(core::str::from_utf8(&letter).unwrap_or("?"))
            .decimal(self.length);
        self.on_line += 1;
        if self.on_line == Self::RUNS_PER_LINE {
            self.out.text("\n");
            self.on_line = 0;
        }
    }

    fn finish(mut self) {
        self.flush();
        if self.on_line != 0 {
            self.out.text("\n");
        }
    }
}

/// An allocated block, as [`Allocator::for_each_live`] shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveBlock {
    /// Physical address of the head page.
    pub pa: PhysAddr,
    /// Length in pages.
    pub pages: usize,
    /// Reference count.
    pub refcount: u32,
    /// Where it was allocated (`Tag::NONE` without `PAGE_DEBUG_TRACK`).
    pub tag: Tag,
}

/// Settings fixed when an allocator is made.
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    /// Kernel virtual address = physical address + `phys_offset`.
    pub phys_offset: u64,
    /// Debug modes (`PAGE_DEBUG_*`).
    pub debug: DebugFlags,
}

/// Byte written over freed pages under `PAGE_DEBUG_POISON`.
const POISON_BYTE: u8 = 0xAA;

/// The kernel and user pages the caches hold, from their counts read one
/// after another while pages may move between caches, capped so that they
/// add up to at most the `taken` pages the bitmaps gave out: a page that
/// moved between two reads may be counted in both (see
/// [`Allocator::stats`]).
fn cached_within(taken: u64, kernel: u64, user: u64) -> (u64, u64) {
    let kernel = kernel.min(taken);
    (kernel, user.min(taken - kernel))
}

/// How a locked search for a block ended.
enum Search {
    Claimed(Claimed),
    /// Failed on purpose (`page_fail_after`, `page_fail_every`).
    Injected,
    NotFound,
}

/// A block just claimed under the lock.
struct Claimed {
    pa: PhysAddr,
    /// A page whose poison pattern was overwritten while it was free.
    overwritten: Option<PhysAddr>,
}

/// Scheduled allocation failures (`page_fail_after`, `page_fail_every`),
/// for testing a kernel's out-of-memory paths. Disarmed, it costs one
/// predictable branch.
#[derive(Clone, Copy, Debug, Default)]
struct FaultPlan {
    armed: bool,
    /// Allocations still allowed to succeed before all fail (`after`).
    successes_left: Option<u64>,
    /// Every n-th allocation fails (0: no such rule).
    every: u64,
    calls: u64,
}

impl FaultPlan {
    #[inline]
    fn fail_now(&mut self) -> bool {
        if !self.armed {
            return false;
        }
        self.fail_scheduled()
    }

    #[cold]
    fn fail_scheduled(&mut self) -> bool {
        self.calls += 1;
        let every = self.every != 0 && self.calls % self.every == 0;
        let after = match &mut self.successes_left {
            Some(0) => true,
            Some(left) => {
                *left -= 1;
                false
            }
            None => false,
        };
        every || after
    }
}

/// The counters the lock guards, and the lock's identity.
struct Inner {
    id: u64,
    total_pages: u64,
    metadata_pages: u64,
    metadata_bytes: u64,
    /// Pages used in the bitmaps: in blocks or in per-CPU caches.
    used_pages: u64,
    high_water_pages: u64,
    failed_allocs: u64,
    regions: u64,
    faults: FaultPlan,
}

impl LockToken for Inner {
    fn owner_id(&self) -> u64 {
        self.id
    }
}

/// A page allocator over any number of regions.
pub struct Allocator<H: Hooks = NoHooks> {
    config: Config,
    hooks: H,
    /// Apart from the fields every lock-free call reads: a CPU taking the
    /// lock does not evict them from the others' caches.
    inner: OwnLines<Mutex<Inner>>,
    /// The current table of regions, readable without the lock.
    table: Published<RegionTable>,
    /// Calls refused as misuse. A native word: a 32-bit kernel then counts
    /// and reads it without the x87 FPU (an `AtomicU64` load on i586).
    misuse_reports: AtomicUsize,
    /// Per-CPU caches of single pages and small blocks, if on.
    caches: Option<&'static CpuCaches>,
    /// Whether scheduled failures are on: allocations then take the locked
    /// path, where they are counted.
    faults_armed: AtomicBool,
}

/// Tells allocators apart, so that one's regions never use another's lock.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl<H: Hooks> Allocator<H> {
    /// An allocator with no regions yet.
    pub fn new(config: Config, hooks: H) -> Self {
        Self::with_caches(config, hooks, None)
    }

    /// An allocator with no regions yet whose allocations and frees of
    /// single pages, and of blocks of 2, 4 and 8 pages aligned to their
    /// length, go through per-CPU caches in `caches` (which no other
    /// allocator may use), picked by [`Hooks::cpu_id`]: most need no lock
    /// at all, so CPUs do not wait for each other. Cached pages count as
    /// free in [`PageStats`]; a search that finds nothing takes them back
    /// first. Such pages and blocks then come most recently freed first
    /// rather than lowest address first. `PAGE_DEBUG_POISON` and
    /// `PAGE_DEBUG_TRACK` turn the caches off (every page goes through their
    /// checks).
    ///
    /// # Panics
    /// If `caches` serve another allocator that is still alive: a page of
    /// one allocator's regions would be handed out by the other. (Dropping
    /// an allocator frees its caches, and forgets the pages in them.)
    pub fn with_cpu_caches(config: Config, hooks: H, caches: &'static CpuCaches) -> Self {
        Self::with_caches(config, hooks, Some(caches))
    }

    fn with_caches(config: Config, hooks: H, caches: Option<&'static CpuCaches>) -> Self {
        let caches = caches.filter(|_| !config.debug.intersects(DebugFlags::POISON | DebugFlags::TRACK));
        if let Some(caches) = caches {
            assert!(
                caches.claim(),
                "kpalloc: these CpuCaches already serve another allocator"
            );
        }
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        Allocator {
            config,
            hooks,
            inner: OwnLines(Mutex::new(Inner {
                id,
                total_pages: 0,
                metadata_pages: 0,
                metadata_bytes: 0,
                used_pages: 0,
                high_water_pages: 0,
                failed_allocs: 0,
                regions: 0,
                faults: FaultPlan::default(),
            })),
            table: Published::empty(),
            misuse_reports: AtomicUsize::new(0),
            caches,
            faults_armed: AtomicBool::new(false),
        }
    }

    /// The settings it was made with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The hooks it calls.
    pub fn hooks(&self) -> &H {
        &self.hooks
    }

    /// Runs `f` under the lock, with interrupts masked by the hooks.
    #[inline(always)]
    fn locked<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let saved = self.hooks.irq_save();
        let result = f(&mut self.inner.lock());
        self.hooks.irq_restore(saved);
        result
    }

    /// Counts and reports a refused call (misuse only; exhaustion is quiet).
    pub(crate) fn report<T>(&self, status: PageStatus, addr: usize) -> Result<T, PageStatus> {
        if status.is_misuse() {
            self.misuse_reports.fetch_add(1, Ordering::Relaxed);
            self.hooks.on_misuse(status, addr);
        }
        Err(status)
    }

    /// Passes `result` through, reporting it if it is a refusal.
    #[inline]
    fn checked<T>(&self, result: Result<T, PageStatus>, addr: usize) -> Result<T, PageStatus> {
        result.or_else(|status| self.report(status, addr))
    }

    /// The kernel virtual address of physical address `pa`.
    #[inline]
    pub fn kva(&self, pa: PhysAddr) -> usize {
        (pa.as_u64().wrapping_add(self.config.phys_offset)) as usize
    }

    /// The physical address behind kernel virtual address `kva`, if it
    /// can be one.
    #[inline]
    pub fn pa(&self, kva: usize) -> Option<PhysAddr> {
        let pa = (kva as u64).checked_sub(self.config.phys_offset)?;
        // What `PhysAddr::try_new` checks (no bit above 51), as a shift: it
        // compiled to 10 instructions on every call, this to 5.
        (pa >> 52 == 0).then(|| PhysAddr::new_truncate(pa))
    }

    /// Hands the pages of `[start, end)` (rounded inward to pages) to the
    /// allocator, in `pool`. Its metadata is written into its first pages;
    /// no other page of it is read or written until allocated. On error
    /// nothing changes: `EINVAL` if the range is empty or its kernel virtual
    /// addresses wrap around or do not fit in a pointer; `EOVERLAP` if it
    /// shares a page with a region added before; `ETOOSMALL` if it cannot
    /// hold its metadata plus one page.
    ///
    /// # Safety
    /// The whole range, at its kernel virtual address (physical +
    /// `phys_offset`), must be memory that is valid for reads and writes and
    /// belongs to this allocator for the rest of the program.
    #[allow(unsafe_code)] // the contract is the caller's; the body is safe code
    pub unsafe fn add_region(&self, start: PhysAddr, end: PhysAddr, pool: Pool) -> Result<(), PageStatus> {
        let result = self.locked(|inner| {
            if end <= start {
                return Err(PageStatus::EINVAL);
            }
            // The kernel virtual range must not wrap around, and must fit
            // in a pointer (on 32-bit targets, memory above the direct map).
            let kva_end = end
                .as_u64()
                .checked_add(self.config.phys_offset)
                .ok_or(PageStatus::EINVAL)?;
            usize::try_from(kva_end - 1).map_err(|_| PageStatus::EINVAL)?;
            let first = Pfn::containing(start.align_up(KPALLOC_PAGE_SIZE as u64).as_u64());
            let last = Pfn::containing(end.as_u64());
            if first >= last {
                return Err(PageStatus::ETOOSMALL);
            }
            let old = self.regions();
            if old.iter().any(|r| r.start < last && first < r.end) {
                return Err(PageStatus::EOVERLAP);
            }
            let tracking = self.config.debug.contains(DebugFlags::TRACK);
            let layout = RegionLayout::new(first, last, old.len() + 1, tracking)?;
            // SAFETY: the caller vouches for the whole range; the metadata is
            // its first pages, and no region overlaps it.
            let (region, table) = unsafe {
                crate::raw::install_region(self.kva(PhysAddr::new(first.pa())), &layout, pool, inner.id, old)
            };
            region.state.get(inner).free_usable(region);
            self.table.publish(table);
            inner.total_pages += last.0 - first.0;
            inner.metadata_pages += layout.usable.0 - first.0;
            inner.metadata_bytes += layout.meta_bytes as u64;
            inner.regions += 1;
            Ok(())
        });
        self.checked(result, region_report_addr(start.as_u64()))
    }

    /// Allocates `count` physically contiguous pages whose first physical
    /// page number is a multiple of `align` (a power of two), with one
    /// reference. Lowest address first, the regions in address order.
    /// Under `PAGE_DEBUG_TRACK` the block records the caller's location.
    /// `ENOMEM` when no such run is free (or a scheduled failure says so);
    /// `EINVAL` for a zero count, an `align` that is not a power of two, or
    /// unknown flags. With `AllocFlags::ASSERT`, a failure calls
    /// [`Hooks::panic`] instead of returning.
    #[track_caller]
    pub fn alloc(&self, count: usize, align: usize, flags: AllocFlags) -> Result<PhysAddr, PageStatus> {
        self.alloc_tagged(count, align, flags, Tag::from_location(Location::caller()))
    }

    /// [`Allocator::alloc`] recording `tag` as the allocation site.
    pub fn alloc_tagged(
        &self,
        count: usize,
        align: usize,
        flags: AllocFlags,
        tag: Tag,
    ) -> Result<PhysAddr, PageStatus> {
        let taken = self.take(count, align, flags, tag);
        self.finish_alloc(taken, count, flags, 0)
    }

    /// One page without flags for a caller that has tried this CPU's cache
    /// already (`page_alloc`'s fast path): from the bitmaps only, so that a
    /// miss does not ask the cache (and refill it) twice.
    #[cfg(feature = "global")]
    pub(crate) fn alloc_page_searching(&self) -> Result<PhysAddr, PageStatus> {
        let taken = self.take_searching(1, 1, AllocFlags::NONE, Tag::NONE);
        self.finish_alloc(taken, 1, AllocFlags::NONE, 0)
    }

    /// Allocates exactly the `count` pages from `pa` (to reserve firmware or
    /// kernel-image pages): `EBUSY` if one of them is in use; `ENOTMANAGED`
    /// if they are not all usable pages of one region; `EINVAL` for an
    /// unaligned `pa`, a count of zero or above `PAGE_REFCOUNT_MAX`, or a
    /// pool/DMA32 mismatch. Scheduled failures do not apply to it.
    #[track_caller]
    pub fn alloc_at(&self, pa: PhysAddr, count: usize, flags: AllocFlags) -> Result<(), PageStatus> {
        self.alloc_at_tagged(pa, count, flags, Tag::from_location(Location::caller()))
    }

    /// [`Allocator::alloc_at`] recording `tag` as the allocation site.
    pub fn alloc_at_tagged(&self, pa: PhysAddr, count: usize, flags: AllocFlags, tag: Tag) -> Result<(), PageStatus> {
        let taken = self.take_at(pa, count, flags, tag);
        self.finish_alloc(taken, count, flags, self.kva(pa)).map(drop)
    }

    /// Whether blocks record their allocation sites (`PAGE_DEBUG_TRACK`).
    pub fn tracking(&self) -> bool {
        self.config.debug.contains(DebugFlags::TRACK)
    }

    /// Outside the lock: reports a poison mismatch and zero-fills a new
    /// block, or reports a refusal (and panics for `PAGE_ALLOC_ASSERT`).
    fn finish_alloc(
        &self,
        taken: Result<Claimed, PageStatus>,
        count: usize,
        flags: AllocFlags,
        addr: usize,
    ) -> Result<PhysAddr, PageStatus> {
        match taken {
            Ok(Claimed { pa, overwritten }) => {
                if let Some(page) = overwritten {
                    // A write after free: report it, then hand the block out.
                    let _ = self.report::<()>(PageStatus::ECORRUPT, self.kva(page));
                }
                if flags.contains(AllocFlags::ZERO) {
                    #[allow(unsafe_code)]
                    // SAFETY: the block was just allocated to this caller, who
                    // has not seen it yet; it lies in a region whose memory
                    // add_region's caller gave us.
                    unsafe {
                        crate::raw::fill(self.kva(pa), count * KPALLOC_PAGE_SIZE, 0)
                    };
                }
                Ok(pa)
            }
            Err(status) => {
                let refused = self.report(status, addr);
                if flags.contains(AllocFlags::ASSERT) {
                    self.panic_for(count, flags.bits());
                }
                refused
            }
        }
    }

    #[inline]
    fn take(&self, count: usize, align: usize, flags: AllocFlags, tag: Tag) -> Result<Claimed, PageStatus> {
        if count == 1 && align == 1 && !flags.contains(AllocFlags::DMA32) {
            if let Some(pa) = self.take_cached(flags.pool()) {
                return Ok(Claimed { pa, overwritten: None });
            }
        } else if is_cached_block_length(count)
            && align.is_power_of_two()
            && align <= count
            && !flags.contains(AllocFlags::DMA32)
        {
            // Cached blocks are aligned to their length.
            if let Some(pa) = self.take_cached_block(flags.pool(), count) {
                return Ok(Claimed { pa, overwritten: None });
            }
        }
        self.take_searching(count, align, flags, tag)
    }

    /// [`Allocator::take`] from the bitmaps; if they have no such run, once
    /// more after taking back the pages the CPUs' caches hold.
    #[inline]
    fn take_searching(&self, count: usize, align: usize, flags: AllocFlags, tag: Tag) -> Result<Claimed, PageStatus> {
        if count == 0 || !align.is_power_of_two() {
            return Err(PageStatus::EINVAL);
        }
        let mut outcome = self.search(count, align, flags, tag, true);
        if matches!(outcome, Search::NotFound) && count <= MAX_BLOCK_PAGES && self.drain_caches() > 0 {
            outcome = self.search(count, align, flags, tag, false);
        }
        match outcome {
            Search::Claimed(claimed) => Ok(claimed),
            Search::Injected | Search::NotFound => {
                self.locked(|inner| inner.failed_allocs += 1);
                Err(PageStatus::ENOMEM)
            }
        }
    }

    /// One search of the bitmaps under the lock, and the claim of what it
    /// finds; only a `first_attempt` asks the failure schedule (one per
    /// allocation). Out of line: the cached path saves no registers for
    /// the search, and the cache drain between two attempts does not stack
    /// on its frame (`page_alloc`'s deepest path).
    #[inline(never)]
    fn search(&self, count: usize, align: usize, flags: AllocFlags, tag: Tag, first_attempt: bool) -> Search {
        let pool = flags.pool();
        let limit = if flags.contains(AllocFlags::DMA32) {
            DMA32_LIMIT
        } else {
            Pfn(u64::MAX)
        };
        self.locked(|inner| {
            if first_attempt && inner.faults.fail_now() {
                return Search::Injected;
            }
            if count > MAX_BLOCK_PAGES {
                // Its length would not fit in a slot.
                return Search::NotFound;
            }
            let regions = self.regions();
            let found = regions.iter().filter(|r| r.pool == pool).find_map(|region| {
                let bit = region.state.get(inner).find_run(region, count, align, limit)?;
                Some((*region, bit))
            });
            match found {
                Some((region, bit)) => Search::Claimed(self.claim(inner, region, bit, count, tag)),
                None => Search::NotFound,
            }
        })
    }

    /// This CPU's caches, if they are on and no failures are scheduled.
    #[inline]
    fn this_cpu(&self) -> Option<&'static CpuCache> {
        let caches = self.caches?;
        if self.faults_armed.load(Ordering::Relaxed) {
            return None;
        }
        Some(caches.of_cpu(self.hooks.cpu_id()))
    }

    /// This CPU's cache of `T` for `pool`, if the caches are on, no
    /// failures are scheduled, and no one holds it.
    #[inline]
    fn cache<T: Cached>(&self, pool: Pool) -> Option<CacheGuard<'static, T>> {
        self.this_cpu()?.try_lock(pool)
    }

    /// A page from this CPU's cache (refilled from the bitmaps if empty),
    /// as a block with one reference. In line in `page_alloc` too.
    #[inline(always)]
    pub(crate) fn take_cached(&self, pool: Pool) -> Option<PhysAddr> {
        let mut cache = self.cache(pool)?;
        if cache.len() == 0 {
            self.refill(&mut cache, pool);
        }
        let page = cache.pop()?;
        page.region.publish_block(page.bit(), 1);
        Some(PhysAddr::new(page.pfn.pa()))
    }

    /// A block of `count` pages from this CPU's cache, as a block with one
    /// reference; `None` if it holds none that long.
    #[inline]
    fn take_cached_block(&self, pool: Pool, count: usize) -> Option<PhysAddr> {
        let mut cache = self.cache::<CachedBlock>(pool)?;
        let CachedBlock { head, .. } = cache.take_latest(|block| block.pages == count)?;
        head.region.publish_block(head.bit(), count);
        Some(PhysAddr::new(head.pfn.pa()))
    }

    /// Under the lock: moves up to half a magazine of free pages of `pool`,
    /// lowest first, into `cache`.
    #[cold]
    fn refill(&self, cache: &mut CacheGuard, pool: Pool) {
        self.locked(|inner| {
            for region in self.regions().iter().filter(|r| r.pool == pool) {
                let want = BATCH_PAGES.saturating_sub(cache.len());
                if want == 0 {
                    break;
                }
                inner.used_pages += region.state.get(inner).claim_for_cache(region, want, cache) as u64;
            }
            inner.high_water_pages = inner.high_water_pages.max(inner.used_pages);
            cache.publish();
        })
    }

    /// Under the lock: gives the `count` oldest entries of `cache` back to
    /// the bitmaps; returns how many pages they held.
    #[cold]
    fn flush<T: Cached>(&self, cache: &mut CacheGuard<T>, count: usize) -> usize {
        let count = count.min(cache.len());
        self.locked(|inner| {
            let mut pages = 0;
            let mut entries = cache.oldest(count).peekable();
            while let Some(first) = entries.next() {
                // The entries of one region in a row (most flushes: all of
                // them) are released, then counted, together.
                let region = first.head().region;
                let state = region.state.get(inner);
                let (mut blocks, mut region_pages) = (0, 0);
                let mut next = Some(first);
                while let Some(entry) = next {
                    state.release_unaccounted(region, entry.head().bit(), entry.pages());
                    blocks += 1;
                    region_pages += entry.pages();
                    next = entries.next_if(|entry| core::ptr::eq(entry.head().region, region));
                }
                state.account_released(blocks, region_pages);
                pages += region_pages;
            }
            drop(entries);
            inner.used_pages -= pages as u64;
            cache.forget_oldest(count);
            cache.publish();
            pages
        })
    }

    /// Gives the pages of every per-CPU cache back to the bitmaps (except
    /// caches in use at that moment: by another CPU, or by a call this one
    /// interrupted); returns how many. For exact free-space figures
    /// (`largest_free_run`, [`Allocator::dump`]) or before suspending a
    /// CPU. Allocations do it themselves before they fail.
    #[cold]
    pub fn drain_caches(&self) -> usize {
        let Some(caches) = self.caches else {
            return 0;
        };
        self.drain::<CachedPage>(caches) + self.drain::<CachedBlock>(caches)
    }

    /// [`Allocator::drain_caches`] of the caches of `T`.
    fn drain<T: Cached>(&self, caches: &CpuCaches) -> usize {
        caches
            .try_lock_each::<T>()
            .filter(|cache| cache.len() > 0)
            .map(|mut cache| {
                let count = cache.len();
                self.flush(&mut cache, count)
            })
            .sum()
    }

    fn take_at(&self, pa: PhysAddr, count: usize, flags: AllocFlags, tag: Tag) -> Result<Claimed, PageStatus> {
        let pfn = Pfn::at(pa.as_u64()).ok_or(PageStatus::EINVAL)?;
        if count == 0 || count > MAX_BLOCK_PAGES {
            return Err(PageStatus::EINVAL);
        }
        let (region, bit) = self.managed(pa)?;
        let end = pfn.0.checked_add(count as u64).ok_or(PageStatus::ENOTMANAGED)?;
        if end > region.end.0 {
            return Err(PageStatus::ENOTMANAGED);
        }
        if region.pool != flags.pool() || (flags.contains(AllocFlags::DMA32) && end > DMA32_LIMIT.0) {
            return Err(PageStatus::EINVAL);
        }
        let attempt = || {
            self.locked(|inner| {
                if !region.state.get(inner).is_free_run(bit, count) {
                    return Err(PageStatus::EBUSY);
                }
                Ok(self.claim(inner, region, bit, count, tag))
            })
        };
        match attempt() {
            // Some of the pages may be free in a CPU's cache.
            Err(PageStatus::EBUSY) if self.drain_caches() > 0 => attempt(),
            result => result,
        }
    }

    /// Under the lock: makes the free run at `bit` a block, after checking
    /// its poison pattern.
    fn claim(&self, inner: &mut Inner, region: &'static Region, bit: usize, count: usize, tag: Tag) -> Claimed {
        let overwritten = self.find_overwritten(region, bit, count);
        region.state.get(inner).claim(region, bit, count, tag);
        inner.used_pages += count as u64;
        inner.high_water_pages = inner.high_water_pages.max(inner.used_pages);
        Claimed {
            pa: PhysAddr::new(region.pfn_of(bit).pa()),
            overwritten,
        }
    }

    /// With `PAGE_DEBUG_POISON`: the first poisoned page of the free run
    /// whose pattern was overwritten since it was freed.
    fn find_overwritten(&self, region: &Region, bit: usize, count: usize) -> Option<PhysAddr> {
        if !self.config.debug.contains(DebugFlags::POISON) {
            return None;
        }
        (bit..bit + count)
            .filter(|&page| region.slot(page) == Slot::Free { poisoned: true })
            .map(|page| PhysAddr::new(region.pfn_of(page).pa()))
            .find(|&pa| {
                #[allow(unsafe_code)]
                // SAFETY: a free page of a region we manage, which nobody may
                // use; read under the lock, before it is handed out.
                let bytes = unsafe { crate::raw::block_bytes(self.kva(pa), KPALLOC_PAGE_SIZE) };
                bytes.iter().any(|&byte| byte != POISON_BYTE)
            })
    }

    /// Refuses an allocation whose flags have unknown bits (`EINVAL`),
    /// still honouring `PAGE_ALLOC_ASSERT` among them.
    #[cfg(feature = "global")]
    pub(crate) fn refuse_flags<T>(&self, count: usize, flags: u32, addr: usize) -> Result<T, PageStatus> {
        let refused = self.report(PageStatus::EINVAL, addr);
        if flags & AllocFlags::ASSERT.bits() != 0 {
            self.panic_for(count, flags);
        }
        refused
    }

    fn panic_for(&self, count: usize, flags: u32) -> ! {
        let free = self.stats().free_pages;
        let mut message = Message::new();
        let mut writer = message.writer();
        writer
            .text("kpalloc: allocation failed: count=")
            .decimal(count as u64)
            .text(" flags=0x")
            .hex(flags as u64)
            .text(" free_pages=")
            .decimal(free);
        self.hooks.panic(writer.as_c_str())
    }

    /// Every region, in address order (the current table), without the lock.
    #[inline]
    fn regions(&self) -> &'static [&'static Region] {
        self.table.load().map_or(&[], |table| table.regions)
    }

    /// The region and bit of the usable page at `pa`, without the lock;
    /// `None` (`ENOTMANAGED`) if it is no usable page of a region.
    // An `Option`, not a `Result`: where the compiler calls it out of line,
    // it returns in two registers, not through memory.
    #[inline]
    fn locate(&self, pa: PhysAddr) -> Option<(&'static Region, usize)> {
        let pfn = Pfn::at(pa.as_u64())?;
        let region = self.table.load()?.find(pfn)?;
        Some((region, region.bit_of(pfn).ok()?))
    }

    /// [`Allocator::locate`] for a call that refuses any other address:
    /// `ENOTMANAGED`.
    #[inline(always)]
    fn managed(&self, pa: PhysAddr) -> Result<(&'static Region, usize), PageStatus> {
        self.locate(pa).ok_or(PageStatus::ENOTMANAGED)
    }

    /// Frees the block headed at `pa`, which must have exactly one reference:
    /// `ESHARED` if it has more, `ENOTALLOCATED` if it is free (or cached),
    /// `ENOTHEAD` for an interior page, `ENOTMANAGED` for an address that is
    /// not a usable page of a region. Every refusal changes nothing and is
    /// reported through [`Hooks::on_misuse`].
    pub fn free(&self, pa: PhysAddr) -> Result<(), PageStatus> {
        self.free_checked(pa, None)
    }

    /// [`Allocator::free`] of a block the caller says is `pages` long:
    /// `EINVAL`, and nothing freed, if it is not.
    pub fn free_sized(&self, pa: PhysAddr, pages: usize) -> Result<(), PageStatus> {
        self.free_checked(pa, Some(pages))
    }

    // In line, with the lookup: a call to it took 0.2 to 0.3 ns more a
    // pair (`scripts/ab.sh`).
    #[inline(always)]
    fn free_checked(&self, pa: PhysAddr, said_pages: Option<usize>) -> Result<(), PageStatus> {
        let cpu = self.this_cpu();
        let result = match self.locate_from(cpu, pa) {
            Some((region, bit)) => self.release_if_sole(region, bit, said_pages, cpu),
            None => Err(PageStatus::ENOTMANAGED),
        };
        self.checked(result, self.kva(pa))
    }

    /// [`Allocator::locate`] for a free on `cpu`, which looks first in the
    /// region that CPU last freed to (most of a CPU's frees land in one
    /// region): no search then, and that region's bounds are read before
    /// the page's address is known. `scripts/ab.sh` on 2026-12-07: 15.5
    /// against 16.6 ns a pair with one region, 15.6 against 17.1 with
    /// seven, 18.6 to 18.9 against 20.0 to 20.7 a free in the random drain.
    #[inline(always)]
    fn locate_from(&self, cpu: Option<&CpuCache>, pa: PhysAddr) -> Option<(&'static Region, usize)> {
        let Some(cpu) = cpu else {
            return self.locate(pa);
        };
        let pfn = Pfn::at(pa.as_u64())?;
        let table = self.table.load()?;
        let last = &cpu.last_region;
        if let Some(region) = table.regions.get(last.load(Ordering::Relaxed)) {
            if let Ok(bit) = region.bit_of(pfn) {
                return Some((region, bit));
            }
        }
        let (index, region) = table.find_index(pfn)?;
        last.store(index, Ordering::Relaxed);
        Some((region, region.bit_of(pfn).ok()?))
    }

    /// Adds a reference to the block headed at `pa`. Lock-free.
    /// `EOVERFLOW` at `PAGE_REFCOUNT_MAX`; otherwise refused as
    /// [`Allocator::free`] refuses, but for `ESHARED`.
    pub fn get(&self, pa: PhysAddr) -> Result<(), PageStatus> {
        let result = self
            .managed(pa)
            .and_then(|(region, bit)| refcount::get(&region.slots[bit]));
        self.checked(result, self.kva(pa))
    }

    /// Drops a reference to the block headed at `pa`, freeing it with the
    /// last one. Lock-free unless it is the last. Refused as
    /// [`Allocator::free`] refuses, but for `ESHARED`.
    pub fn put(&self, pa: PhysAddr) -> Result<(), PageStatus> {
        let result = self.managed(pa).and_then(|(region, bit)| loop {
            match refcount::put_unless_last(&region.slots[bit])? {
                Put::Done => return Ok(()),
                Put::Last => match self.release_if_sole(region, bit, None, self.this_cpu()) {
                    // A get raised the count meanwhile: drop again.
                    Err(PageStatus::ESHARED) => {}
                    released => return released,
                },
            }
        });
        self.checked(result, self.kva(pa))
    }

    /// Frees the block headed at `bit` if it has one reference; `ESHARED`
    /// if it has more, `EINVAL` if the caller said how long the block is
    /// and was wrong.
    #[inline(always)]
    fn release_if_sole(
        &self,
        region: &'static Region,
        bit: usize,
        said_pages: Option<usize>,
        cpu: Option<&CpuCache>,
    ) -> Result<(), PageStatus> {
        if let Some(released) = cpu.and_then(|cpu| self.release_to_cache(region, bit, said_pages, cpu)) {
            return released;
        }
        self.release_locked(region, bit, said_pages)
    }

    /// [`Allocator::release_if_sole`] under the lock.
    #[inline(never)]
    fn release_locked(&self, region: &'static Region, bit: usize, said_pages: Option<usize>) -> Result<(), PageStatus> {
        self.locked(|inner| {
            let slot = &region.slots[bit];
            match said_pages {
                None => refcount::take_sole(slot, 0),
                Some(said) => refcount::take_last(
                    slot,
                    || match said == region.block_pages(bit) {
                        true => Ok(()),
                        false => Err(PageStatus::EINVAL),
                    },
                    0,
                ),
            }?;
            let pages = region.block_pages(bit);
            let poison = self.config.debug.contains(DebugFlags::POISON);
            if poison {
                #[allow(unsafe_code)]
                // SAFETY: the block's last reference is gone and its pages
                // are not free yet: nobody may touch them but us.
                unsafe {
                    crate::raw::fill(
                        self.kva(PhysAddr::new(region.pfn_of(bit).pa())),
                        pages * KPALLOC_PAGE_SIZE,
                        POISON_BYTE,
                    )
                };
            }
            region.state.get(inner).release(region, bit, pages, poison);
            inner.used_pages -= pages as u64;
            Ok(())
        })
    }

    /// Frees the block headed at `bit`, if it has one reference and is a
    /// single page or a block the caches hold, into this CPU's cache,
    /// without the allocator's lock; `None` where the locked path must
    /// decide (caches off or busy, another length, a wrong `said_pages`).
    // In line in `page_free`, not called: no arguments to pass, no second
    // frame (`scripts/ab.sh` on 2026-12-07: pairs 13.3 against 14.6 ns, the
    // random drain 15.1 against 16.0 a free).
    #[inline(always)]
    fn release_to_cache(
        &self,
        region: &'static Region,
        bit: usize,
        said_pages: Option<usize>,
        cpu: &CpuCache,
    ) -> Option<Result<(), PageStatus>> {
        // The head's slot and the next page's (every page has one, see
        // `RegionLayout::slots`), which holds the block's length: one bounds
        // check for both, none after the compare-and-swap (`scripts/ab.sh`
        // on 2026-12-07: the random drain 14.7 to 15.0 against 15.2 to 15.7
        // ns a free, pairs 13.0 against 13.4 to 13.6).
        let slots = region.slots.get(bit..)?.first_chunk::<2>()?;
        let next = slots[1].load(Ordering::Relaxed);
        let head = CachedPage::new(region, bit);
        // A single page tested for first, not its length decoded: one
        // comparison (`scripts/ab.sh` on 2026-12-07: pairs 10.4 against 11.1
        // ns, the random drain 14.2 to 14.5 against 14.6 to 14.9, without
        // caches 30.6 against 30.9).
        let Some(pages) = Slot::interior_pages(next) else {
            return match said_pages {
                Some(said) if said != 1 => None,
                _ => self.release_into(head, cpu, slots, next),
            };
        };
        if said_pages.is_some_and(|said| said != pages) || !is_cacheable_block(bit, pages) {
            return None;
        }
        self.release_into(CachedBlock { head, pages }, cpu, slots, next)
    }

    /// [`Allocator::release_to_cache`] of `entry`, whose head's slot and
    /// the next are `slots`, and whose length was read from `next`, into
    /// this CPU's cache of its kind.
    #[inline]
    fn release_into<T: Cached>(
        &self,
        entry: T,
        cpu: &CpuCache,
        slots: &[AtomicU32; 2],
        next: u32,
    ) -> Option<Result<(), PageStatus>> {
        let head = entry.head();
        let (region, bit) = (head.region, head.bit());
        let mut cache = cpu.try_lock::<T>(region.pool)?;
        let slot = &slots[0];
        if let Err(status) = refcount::take_sole(slot, CACHED) {
            return Some(Err(status));
        }
        if slots[1].load(Ordering::Relaxed) != next {
            // Freed and reallocated with another length by someone else
            // between the two looks (a misuse race), or only a neighbour's
            // count changed: undo, and let the lock decide. (The raw slot
            // compared, not the length decoded again: 5 instructions fewer
            // a free.)
            slot.store(1, Ordering::Release);
            return None;
        }
        if entry.pages() > 1 {
            region.mark_cached(bit + 1, entry.pages() - 1);
        }
        if !cache.push(entry) {
            self.flush_and_push(cache, entry);
        }
        Some(Ok(()))
    }

    /// Flushes the full magazine of `cache`, pushes `entry` and gives the
    /// magazine back.
    #[cold]
    #[inline(never)]
    fn flush_and_push<T: Cached>(&self, mut cache: CacheGuard<T>, entry: T) {
        self.flush(&mut cache, T::BATCH);
        cache.push(entry);
    }

    /// Turns the block headed at `pa` (one reference) into single-page
    /// blocks of one reference each, each keeping the block's allocation
    /// site. Refused as [`Allocator::free`] refuses.
    pub fn split(&self, pa: PhysAddr) -> Result<(), PageStatus> {
        let result = self.managed(pa).and_then(|(region, bit)| {
            self.locked(|inner| match region.slot(bit) {
                Slot::Free { .. } | Slot::Cached => Err(PageStatus::ENOTALLOCATED),
                Slot::Interior(_) => Err(PageStatus::ENOTHEAD),
                Slot::Head(1) => {
                    let pages = region.block_pages(bit);
                    region.state.get(inner).spread_tag(bit, pages);
                    for page in bit + 1..bit + pages {
                        region.slots[page].store(1, Ordering::Release);
                    }
                    Ok(())
                }
                Slot::Head(_) => Err(PageStatus::ESHARED),
            })
        });
        self.checked(result, self.kva(pa))
    }

    /// The reference count of the block headed at `pa`; 0 for any other
    /// address.
    pub fn refcount(&self, pa: PhysAddr) -> u32 {
        match self.locate(pa).map(|(region, bit)| region.slot(bit)) {
            Some(Slot::Head(count)) => count,
            _ => 0,
        }
    }

    /// The length in pages of the block headed at `pa`; 0 for any other
    /// address.
    pub fn block_pages(&self, pa: PhysAddr) -> usize {
        match self.locate(pa) {
            Some((region, bit)) if matches!(region.slot(bit), Slot::Head(_)) => region.block_pages(bit),
            _ => 0,
        }
    }

    /// Lets the next `successes` allocations ([`Allocator::alloc`], not
    /// [`Allocator::alloc_at`]) succeed and fails every later one with
    /// `ENOMEM`, until [`Allocator::fail_off`]. It joins a
    /// [`Allocator::fail_every`] rule in force rather than replacing it:
    /// an allocation fails if either rule says so, and the count here runs
    /// over attempts, failed ones included.
    pub fn fail_after(&self, successes: u64) {
        self.locked(|inner| {
            inner.faults = FaultPlan {
                armed: true,
                successes_left: Some(successes),
                ..inner.faults
            };
            self.faults_armed.store(true, Ordering::Relaxed);
        })
    }

    /// Fails every `n`-th allocation from now on with `ENOMEM` (`n` >= 1),
    /// until [`Allocator::fail_off`]. It joins a [`Allocator::fail_after`]
    /// rule in force (see there).
    pub fn fail_every(&self, n: u64) -> Result<(), PageStatus> {
        if n == 0 {
            return self.report(PageStatus::EINVAL, 0);
        }
        self.locked(|inner| {
            inner.faults = FaultPlan {
                armed: true,
                every: n,
                calls: 0,
                ..inner.faults
            };
            self.faults_armed.store(true, Ordering::Relaxed);
        });
        Ok(())
    }

    /// Stops scheduled failures.
    pub fn fail_off(&self) {
        self.locked(|inner| {
            inner.faults = FaultPlan::default();
            self.faults_armed.store(false, Ordering::Relaxed);
        })
    }

    /// Calls `visit` for every allocated block, in address order, with its
    /// allocation site under `PAGE_DEBUG_TRACK`. The lock is not held
    /// during `visit`, which may allocate and free: blocks it changes may be
    /// seen or not.
    pub fn for_each_live(&self, mut visit: impl FnMut(&LiveBlock)) {
        for region in self.regions() {
            let mut bit = 0;
            while let Some(block) = self.locked(|inner| region.state.get(inner).next_block(region, bit)) {
                bit = block.bit + block.pages;
                visit(&LiveBlock {
                    pa: PhysAddr::new(region.pfn_of(block.bit).pa()),
                    pages: block.pages,
                    refcount: block.refcount,
                    tag: block.tag,
                });
            }
        }
    }

    /// Writes the state of every page as text (see `page_dump` in the C
    /// header for the format) into `buffer`, NUL-terminated and cut to fit;
    /// returns the bytes the whole dump needs, without the NUL.
    pub fn dump(&self, buffer: &mut [u8]) -> usize {
        let stats = self.stats();
        let mut out = TextWriter::new(buffer);
        out.text("kpalloc-dump 1\nstats total=")
            .decimal(stats.total_pages)
            .text(" free=")
            .decimal(stats.free_pages)
            .text(" used=")
            .decimal(stats.used_pages)
            .text(" metadata=")
            .decimal(stats.metadata_pages)
            .text(" regions=")
            .decimal(stats.regions)
            .text(" largest_free_run=")
            .decimal(stats.largest_free_run)
            .text("\n");
        for region in self.regions() {
            out.text("region start=0x")
                .hex(region.start.pa())
                .text(" end=0x")
                .hex(region.end.pa())
                .text(match region.pool {
                    Pool::Kernel => " pool=kernel\n",
                    Pool::User => " pool=user\n",
                });
            let mut runs = RunWriter {
                out: &mut out,
                state: b'M',
                length: region.meta_pages(),
                on_line: 0,
            };
            self.locked(|inner| {
                let state = region.state.get(inner);
                let (mut bit, end) = region.usable_bits();
                while bit < end {
                    let (kind, pages) = match state.next_block(region, bit) {
                        Some(block) if block.bit == bit => (if block.refcount > 1 { b'S' } else { b'U' }, block.pages),
                        Some(block) => (b'F', block.bit - bit),
                        None => (b'F', end - bit),
                    };
                    runs.push(kind, pages as u64);
                    bit += pages;
                }
            });
            runs.finish();
        }
        out.text("end\n");
        out.needed()
    }

    /// A snapshot of the counters, under the lock. The lock keeps pages from
    /// moving between the per-CPU caches and the bitmaps, but not between
    /// callers and the caches: so it also holds the magazines while it
    /// reads their counts (every one it can take within a few tries: one
    /// that stays busy belongs to a call interrupted or preempted, which
    /// cannot change it meanwhile, or to a flush or refill waiting for the
    /// lock). Read one after another while a thread allocates and frees,
    /// the counts could add up to more pages in use than it ever held.
    ///
    /// A magazine that stayed busy through those tries and is given back
    /// before its count is read can still change under the lock: with two
    /// such, a page moved from one to the other between the two reads is
    /// counted in both. The cached counts are capped at the pages taken
    /// from the bitmaps, so that `used_pages` never goes below zero.
    pub fn stats(&self) -> PageStats {
        let misuse_reports = self.misuse_reports.load(Ordering::Relaxed) as u64;
        let _held = self.caches.map(CpuCaches::hold_available);
        let cached = |pool| self.caches.map_or(0, |caches| caches.cached_pages(pool));
        self.locked(|inner| {
            let (kernel_cached, user_cached) =
                cached_within(inner.used_pages, cached(Pool::Kernel), cached(Pool::User));
            let used_pages = inner.used_pages - kernel_cached - user_cached;
            let mut stats = PageStats {
                total_pages: inner.total_pages,
                free_pages: inner.total_pages - inner.metadata_pages - used_pages,
                used_pages,
                metadata_pages: inner.metadata_pages,
                regions: inner.regions,
                high_water_pages: inner.high_water_pages,
                failed_allocs: inner.failed_allocs,
                misuse_reports,
                metadata_bytes: inner.metadata_bytes,
                user_free_pages: user_cached,
                cached_pages: kernel_cached + user_cached,
                ..PageStats::default()
            };
            for region in self.regions() {
                let state = region.state.get(inner);
                stats.largest_free_run = stats.largest_free_run.max(state.map.largest_run() as u64);
                if region.pool == Pool::User {
                    stats.user_free_pages += state.free_pages;
                }
            }
            stats
        })
    }

    /// [`Allocator::check`] with every cache held: the first bad page, or
    /// `Pfn(0)` for bad totals.
    // Not inlined: a frame of its own keeps page_check's stack small.
    #[inline(never)]
    fn check_held(&self, caches: Option<&HeldMagazines>) -> Result<(), Pfn> {
        self.locked(|inner| {
            let regions = self.regions();
            let (mut total, mut meta, mut used, mut cached) = (0, 0, 0, 0);
            for region in regions {
                total += region.total_pages();
                meta += region.meta_pages();
                let (region_used, region_cached) = region
                    .state
                    .get(inner)
                    .check(region)
                    .map_err(|bit| region.pfn_of(bit))?;
                // A write after free, found before the page is handed out.
                let (first, end) = region.usable_bits();
                if let Some(pa) = self.find_overwritten(region, first, end - first) {
                    return Err(Pfn::containing(pa.as_u64()));
                }
                used += region_used;
                cached += region_cached;
            }
            // Each cached page is in a cache, and each page in a cache is
            // cached (so no page is in two).
            let in_caches = caches.map_or(Ok(0), Self::pages_in_caches)?;
            let sorted = regions.windows(2).all(|pair| pair[0].end <= pair[1].start);
            let totals = (total, meta, used + cached);
            if !sorted || in_caches != cached || totals != (inner.total_pages, inner.metadata_pages, inner.used_pages) {
                return Err(Pfn(0));
            }
            Ok(())
        })
    }

    /// The pages in the held caches, each of which must be marked cached:
    /// the first that is not, if one is not.
    // Not inlined: its iterators' state stays off check_held's frame.
    #[inline(never)]
    fn pages_in_caches(caches: &HeldMagazines) -> Result<u64, Pfn> {
        let mut pages_in_caches = 0;
        for (head, pages) in caches.blocks() {
            let region = head.region;
            if let Some(page) = (head.bit()..head.bit() + pages).find(|&page| region.slot(page) != Slot::Cached) {
                return Err(region.pfn_of(page));
            }
            pages_in_caches += pages as u64;
        }
        Ok(pages_in_caches)
    }

    /// Verifies every region's bitmap, summaries, slots and counters against
    /// each other and the totals, and under `PAGE_DEBUG_POISON` the poison
    /// pattern of every free page; `ECORRUPT` (reported with the address of
    /// the first bad page) on the first disagreement.
    ///
    /// With per-CPU caches, every cache is held during the check: `EBUSY`
    /// (not counted as misuse) if one stays held, as by a call this check
    /// interrupted on its own CPU; try again later.
    pub fn check(&self) -> Result<(), PageStatus> {
        let caches = match self.caches.map(CpuCaches::hold_all) {
            Some(None) => return Err(PageStatus::EBUSY),
            held => held.flatten(),
        };
        let result = self.check_held(caches.as_ref());
        result.or_else(|pfn| {
            let addr = if pfn == Pfn(0) {
                0
            } else {
                self.kva(PhysAddr::new(pfn.pa()))
            };
            self.report(PageStatus::ECORRUPT, addr)
        })
    }
}

impl<H: Hooks> Drop for Allocator<H> {
    /// Gives the per-CPU caches back for another allocator. The pages in
    /// them are forgotten with this allocator's regions, whose memory is
    /// not touched: it may be gone already.
    fn drop(&mut self) {
        if let Some(caches) = self.caches {
            caches.disown();
        }
    }
}

/// How misuse names a region: by its physical start, as the caller gave
/// it; 0 (NULL) where that does not fit in a pointer (on a 32-bit kernel,
/// memory from 4 GiB up), rather than a cut-off address that looks valid.
pub(crate) fn region_report_addr(start: u64) -> usize {
    usize::try_from(start).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::PAGE_REFCOUNT_MAX;

    /// An allocator with `hooks` over a leaked 64 KiB buffer, all of it one
    /// kernel region at physical 0 (so that phys_offset is the buffer's
    /// address and never wraps: Miri on a 32-bit target hands out
    /// addresses below 1 MiB).
    fn allocator_over_a_buffer<H: Hooks>(hooks: H) -> Allocator<H> {
        let (memory, _) = crate::test_ram::boot_ram(0, 16 * KPALLOC_PAGE_SIZE as u64);
        let allocator = Allocator::new(
            Config {
                phys_offset: memory.expose_provenance() as u64,
                debug: DebugFlags::NONE,
            },
            hooks,
        );
        #[allow(unsafe_code)]
        // SAFETY: the range is the leaked buffer, given to this allocator only.
        unsafe { allocator.add_region(PhysAddr::new(0), PhysAddr::new(0x10000), Pool::Kernel) }.unwrap();
        allocator
    }

    #[test]
    fn a_kernel_address_is_physical_from_the_offset_up_to_bit_52() {
        let allocator = Allocator::new(
            Config {
                phys_offset: 0x1000,
                debug: DebugFlags::NONE,
            },
            NoHooks,
        );
        assert_eq!(allocator.pa(0xFFF), None);
        assert_eq!(allocator.pa(0x1000), Some(PhysAddr::new(0)));
        #[cfg(target_pointer_width = "64")]
        {
            let top = 1usize << 52;
            assert_eq!(allocator.pa(0x1000 + top - 1), Some(PhysAddr::new(top as u64 - 1)));
            assert_eq!(allocator.pa(0x1000 + top), None);
            assert_eq!(allocator.pa(usize::MAX), None);
        }
    }

    #[test]
    fn cache_counts_read_apart_never_exceed_the_pages_taken() {
        assert_eq!(cached_within(10, 3, 4), (3, 4));
        assert_eq!(cached_within(7, 3, 4), (3, 4));
        // One page taken, seen in two kernel (or two user) magazines.
        assert_eq!(cached_within(1, 2, 0), (1, 0));
        assert_eq!(cached_within(1, 0, 2), (0, 1));
        assert_eq!(cached_within(3, 2, 2), (2, 1));
        assert_eq!(cached_within(0, 2, 2), (0, 0));
    }

    #[test]
    fn refcount_overflow_is_refused_and_changes_nothing() {
        let allocator = allocator_over_a_buffer(NoHooks);
        let block = allocator.alloc(1, 1, AllocFlags::NONE).unwrap();
        let (region, bit) = allocator.locate(block).unwrap();
        // Reaching the maximum through get would take 2^31 calls.
        region.slots[bit].store(PAGE_REFCOUNT_MAX - 1, Ordering::Relaxed);
        allocator.get(block).unwrap();
        assert_eq!(allocator.refcount(block), PAGE_REFCOUNT_MAX);
        let before = allocator.stats();
        assert_eq!(allocator.get(block), Err(PageStatus::EOVERFLOW));
        assert_eq!(allocator.refcount(block), PAGE_REFCOUNT_MAX);
        assert_eq!(allocator.stats().misuse_reports, before.misuse_reports + 1);
        allocator.put(block).unwrap();
        assert_eq!(allocator.refcount(block), PAGE_REFCOUNT_MAX - 1);
        assert!(allocator.check().is_ok());
    }

    /// Records the last misuse report.
    #[derive(Default)]
    struct LastMisuse(std::sync::Mutex<Option<(PageStatus, usize)>>);
    impl Hooks for &LastMisuse {
        fn on_misuse(&self, status: PageStatus, addr: usize) {
            *self.0.lock().unwrap() = Some((status, addr));
        }
    }

    #[test]
    fn a_check_that_finds_bad_totals_reports_no_page() {
        let last = LastMisuse::default();
        let allocator = allocator_over_a_buffer(&last);
        let block = allocator.alloc(2, 1, AllocFlags::NONE).unwrap();
        assert_eq!(allocator.check(), Ok(()));
        // Every page agrees with its bitmap; only the total is off.
        allocator.locked(|inner| inner.used_pages += 1);
        assert_eq!(allocator.check(), Err(PageStatus::ECORRUPT));
        assert_eq!(*last.0.lock().unwrap(), Some((PageStatus::ECORRUPT, 0)));
        allocator.locked(|inner| inner.used_pages -= 1);
        assert_eq!(allocator.check(), Ok(()));
        allocator.free(block).unwrap();
    }

    #[test]
    fn the_slot_past_the_bitmap_stays_free_and_the_check_sees_it() {
        let last = LastMisuse::default();
        let allocator = allocator_over_a_buffer(&last);
        let region = allocator.table.load().unwrap().regions[0];
        let past = region.slots.last().unwrap();
        let bits = allocator.locked(|inner| region.state.get(inner).map.bits());
        assert_eq!(region.slots.len(), bits + 1);
        assert_eq!(allocator.check(), Ok(()));
        past.store(1, Ordering::Relaxed);
        assert_eq!(allocator.check(), Err(PageStatus::ECORRUPT));
        past.store(0, Ordering::Relaxed);
        assert_eq!(allocator.check(), Ok(()));
    }

    /// Checks that no field a lock-free call reads shares a cache line with
    /// the lock of an `Allocator<H>`.
    fn assert_lock_apart<H: Hooks>() {
        let line = |offset: usize| offset / 64;
        let lock = core::mem::offset_of!(Allocator<H>, inner);
        let lock_lines = line(lock)..=line(lock + size_of::<OwnLines<Mutex<Inner>>>() - 1);
        for (field, offset, size) in [
            (
                "config",
                core::mem::offset_of!(Allocator<H>, config),
                size_of::<Config>(),
            ),
            ("hooks", core::mem::offset_of!(Allocator<H>, hooks), size_of::<H>()),
            (
                "table",
                core::mem::offset_of!(Allocator<H>, table),
                size_of::<Published<RegionTable>>(),
            ),
            (
                "caches",
                core::mem::offset_of!(Allocator<H>, caches),
                size_of::<Option<&CpuCaches>>(),
            ),
            ("faults_armed", core::mem::offset_of!(Allocator<H>, faults_armed), 1),
        ] {
            for byte in [offset, offset + size.max(1) - 1] {
                assert!(!lock_lines.contains(&line(byte)), "{field} shares a line with the lock");
            }
        }
    }

    #[test]
    fn the_lock_shares_no_cache_line_with_what_lock_free_calls_read() {
        assert_lock_apart::<NoHooks>();
        #[cfg(feature = "global")]
        assert_lock_apart::<crate::ffi::CHooks>();
    }
}
