//! Per-CPU caches of free single pages and small blocks: the way past the
//! allocator's lock.
//!
//! Each CPU has, per pool, a small stack of free single pages and one of
//! free blocks of 2, 4 or 8 pages, each aligned to its length (magazines,
//! as in Bonwick's slab allocator; Linux's per-CPU lists hold blocks up to
//! 8 pages too, for kernel stacks and the like). An allocation of either
//! kind pops from its stack and a free pushes onto it without the
//! allocator's lock. Single pages are refilled from the bitmaps a few at a
//! time; blocks enter only when freed, so that a size the kernel keeps
//! allocating and freeing stays out of the search. Only a refill or a
//! flush back to the bitmaps takes the lock.
//!
//! Every magazine is taken with `try_lock` and never waited for, so the CPU
//! number only picks a cache: a wrong one (a thread migrated mid-call) or
//! a busy one (an interrupt handler that interrupted a cache operation on
//! its own CPU) sends the call to the locked path, never into a deadlock.
//!
//! Cached pages stay "used" in the bitmaps and their slots say cached, so
//! `check` sees each of them and every misuse check still holds.

use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use crate::region::Region;
use crate::sync::{OwnLines, TryLock, TryLockGuard};
use crate::types::{Pfn, Pool, KPALLOC_MAX_CPUS};

/// Pages one magazine of single pages holds.
pub(crate) const MAGAZINE_PAGES: usize = 32;
/// Pages a refill takes from the bitmaps, and a flush gives back, at once:
/// half a magazine, so that alternating allocations and frees never
/// refill and flush in turn.
pub(crate) const BATCH_PAGES: usize = MAGAZINE_PAGES / 2;
/// The longest block the caches hold.
const MAX_CACHED_BLOCK: usize = 8;
/// Blocks one magazine of blocks holds: at most 64 pages per CPU and pool
/// kept out of the first-fit search.
const MAGAZINE_BLOCKS: usize = 8;

/// Whether blocks of `pages` pages go to the block caches: 2, 4 or 8.
#[inline]
pub(crate) fn is_cached_block_length(pages: usize) -> bool {
    pages > 1 && pages <= MAX_CACHED_BLOCK && pages.is_power_of_two()
}

/// Whether a free of the `pages`-page block headed at `bit` may go to a
/// block cache: 2, 4 or 8 pages aligned to their length (bit 0 of a region
/// is 64-page aligned, so the bit's alignment is the frame's).
#[inline]
pub(crate) fn is_cacheable_block(bit: usize, pages: usize) -> bool {
    is_cached_block_length(pages) && bit % pages == 0
}

/// A cached page: its region, so that neither an allocation nor a flush
/// has to look the region up, and its frame, so that an allocation has
/// its address without reading the region first.
#[derive(Clone, Copy)]
pub(crate) struct CachedPage {
    pub(crate) region: &'static Region,
    pub(crate) pfn: Pfn,
}

impl CachedPage {
    pub(crate) fn new(region: &'static Region, bit: usize) -> Self {
        CachedPage {
            region,
            pfn: region.pfn_of(bit),
        }
    }

    /// The page's bit in its region.
    #[inline]
    pub(crate) fn bit(&self) -> usize {
        (self.pfn.0 - self.region.base.0) as usize
    }
}

/// A cached block of 2, 4 or 8 pages, aligned to its length.
#[derive(Clone, Copy)]
pub(crate) struct CachedBlock {
    pub(crate) head: CachedPage,
    pub(crate) pages: usize,
}

/// What a magazine stacks, and how many.
pub(crate) trait MagazineEntry: Copy {
    type Entries: AsRef<[Option<Self>]> + AsMut<[Option<Self>]>;
    const NO_ENTRIES: Self::Entries;
}

/// What a cache holds: single pages ([`CachedPage`]) or blocks
/// ([`CachedBlock`]).
pub(crate) trait Cached: MagazineEntry + 'static {
    /// Entries a full magazine's flush gives back.
    const BATCH: usize;
    fn head(&self) -> CachedPage;
    fn pages(&self) -> usize;
    /// Pages in `magazine`.
    fn pages_in(magazine: &Magazine<Self>) -> usize {
        magazine.entries().map(|entry| entry.pages()).sum()
    }
    /// A CPU's magazines of this kind, one per pool.
    fn caches(cpu: &CpuCache) -> &[Cache<Self>; 2];
}

impl MagazineEntry for CachedPage {
    type Entries = [Option<CachedPage>; MAGAZINE_PAGES];
    const NO_ENTRIES: Self::Entries = [None; MAGAZINE_PAGES];
}

impl Cached for CachedPage {
    const BATCH: usize = BATCH_PAGES;
    #[inline]
    fn head(&self) -> CachedPage {
        *self
    }
    #[inline]
    fn pages(&self) -> usize {
        1
    }
    #[inline]
    fn pages_in(magazine: &Magazine<Self>) -> usize {
        magazine.len()
    }
    #[inline]
    fn caches(cpu: &CpuCache) -> &[Cache<Self>; 2] {
        &cpu.pages
    }
}

impl MagazineEntry for CachedBlock {
    type Entries = [Option<CachedBlock>; MAGAZINE_BLOCKS];
    const NO_ENTRIES: Self::Entries = [None; MAGAZINE_BLOCKS];
}

impl Cached for CachedBlock {
    const BATCH: usize = MAGAZINE_BLOCKS / 2;
    #[inline]
    fn head(&self) -> CachedPage {
        self.head
    }
    #[inline]
    fn pages(&self) -> usize {
        self.pages
    }
    #[inline]
    fn caches(cpu: &CpuCache) -> &[Cache<Self>; 2] {
        &cpu.blocks
    }
}

/// A stack of free pages or blocks of one pool, for one CPU.
pub(crate) struct Magazine<T: MagazineEntry = CachedPage> {
    len: usize,
    entries: T::Entries,
}

impl<T: MagazineEntry> Magazine<T> {
    const fn new() -> Self {
        Magazine {
            len: 0,
            entries: T::NO_ENTRIES,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Entries it can still take.
    pub(crate) fn room(&self) -> usize {
        self.entries.as_ref().len() - self.len
    }

    /// The most recently cached entry (the likeliest to be in the CPU's
    /// data cache).
    #[inline]
    pub(crate) fn pop(&mut self) -> Option<T> {
        self.len = self.len.checked_sub(1)?;
        self.entries.as_ref()[self.len]
    }

    /// Caches `entry`; `false` if the magazine is full.
    #[inline]
    pub(crate) fn push(&mut self, entry: T) -> bool {
        let Some(slot) = self.entries.as_mut().get_mut(self.len) else {
            return false;
        };
        *slot = Some(entry);
        self.len += 1;
        true
    }

    /// The cached entries, oldest first.
    pub(crate) fn entries(&self) -> impl Iterator<Item = T> + '_ {
        self.oldest(self.len)
    }

    /// The `count` oldest cached entries (all, if fewer), oldest first.
    pub(crate) fn oldest(&self, count: usize) -> impl Iterator<Item = T> + '_ {
        self.entries.as_ref()[..count.min(self.len)].iter().flatten().copied()
    }

    /// Drops the `count` oldest entries (the caller has given them back).
    pub(crate) fn forget_oldest(&mut self, count: usize) {
        let count = count.min(self.len);
        self.entries.as_mut().copy_within(count..self.len, 0);
        self.len -= count;
    }

    /// Takes the most recently cached entry that `matches`.
    #[inline]
    pub(crate) fn take_latest(&mut self, matches: impl Fn(&T) -> bool) -> Option<T> {
        let held = &mut self.entries.as_mut()[..self.len];
        let index = held.iter().rposition(|entry| entry.as_ref().is_some_and(&matches))?;
        let entry = held[index];
        if index + 1 < held.len() {
            // Not for the latest entry, the usual one: no call to memmove.
            held.copy_within(index + 1.., index);
        }
        self.len -= 1;
        entry
    }
}

/// One magazine and the pages in it, readable without its lock for
/// `page_stats`.
pub(crate) struct Cache<T: Cached> {
    magazine: TryLock<Magazine<T>>,
    pages: AtomicU32,
}

impl<T: Cached> Cache<T> {
    const fn new() -> Self {
        Cache {
            magazine: TryLock::new(Magazine::new()),
            pages: AtomicU32::new(0),
        }
    }
}

/// One CPU's caches: of single pages and of blocks, one of each per pool.
pub(crate) struct CpuCache {
    pages: [Cache<CachedPage>; 2],
    blocks: [Cache<CachedBlock>; 2],
    /// The index in the region table of the region this CPU last freed a
    /// page to, where a free looks first: most frees on a CPU land in one
    /// region. A guess, checked against the page each time, so a stale one
    /// (a new table, a migrated thread, an earlier allocator's) only costs
    /// the search.
    pub(crate) last_region: AtomicUsize,
}

impl CpuCache {
    /// This CPU's cache of `T` for `pool`.
    #[inline]
    fn cache<T: Cached>(&self, pool: Pool) -> &Cache<T> {
        &T::caches(self)[pool as usize]
    }

    /// This CPU's magazine of `T` for `pool`, unless someone holds it.
    #[inline]
    pub(crate) fn try_lock<T: Cached>(&self, pool: Pool) -> Option<CacheGuard<'_, T>> {
        let cache = self.cache::<T>(pool);
        Some(CacheGuard {
            magazine: cache.magazine.try_lock()?,
            pages: &cache.pages,
        })
    }
}

/// The per-CPU page caches of one allocator: `KPALLOC_MAX_CPUS` CPUs, each
/// with a magazine of pages and one of blocks per pool. CPU numbers from
/// `KPALLOC_MAX_CPUS` up share (number modulo `KPALLOC_MAX_CPUS`).
///
/// Const-constructible, so that it lives in a `static` and costs no stack:
/// `static CACHES: CpuCaches = CpuCaches::new();`.
pub struct CpuCaches {
    cpus: [OwnLines<CpuCache>; KPALLOC_MAX_CPUS],
    /// Whether an allocator uses them: pages of one allocator's regions
    /// must never reach another.
    claimed: AtomicBool,
}

impl Default for CpuCaches {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuCaches {
    /// Empty caches.
    pub const fn new() -> Self {
        CpuCaches {
            cpus: [const {
                OwnLines(CpuCache {
                    pages: [Cache::new(), Cache::new()],
                    blocks: [Cache::new(), Cache::new()],
                    last_region: AtomicUsize::new(0),
                })
            }; KPALLOC_MAX_CPUS],
            claimed: AtomicBool::new(false),
        }
    }

    /// Takes the caches for one allocator; `false` if one has them already.
    pub(crate) fn claim(&self) -> bool {
        !self.claimed.swap(true, Ordering::AcqRel)
    }

    /// Gives the caches up for another allocator: empties every magazine
    /// without returning its pages anywhere (their allocator is going
    /// away). They stay claimed if a magazine is held.
    pub(crate) fn disown(&self) {
        let forgotten = self.forget_all::<CachedPage>() + self.forget_all::<CachedBlock>();
        // Every magazine: two kinds, two pools, each CPU.
        if forgotten == 2 * 2 * KPALLOC_MAX_CPUS {
            self.claimed.store(false, Ordering::Release);
        }
    }

    /// Empties every magazine of `T` no one holds; returns how many.
    fn forget_all<T: Cached>(&self) -> usize {
        self.try_lock_each::<T>()
            .map(|mut cache| {
                let count = cache.len();
                cache.forget_oldest(count);
            })
            .count()
    }

    /// CPU `cpu`'s caches (CPU numbers from `KPALLOC_MAX_CPUS` up share).
    #[inline]
    pub(crate) fn of_cpu(&self, cpu: usize) -> &CpuCache {
        &self.cpus[cpu % KPALLOC_MAX_CPUS]
    }

    fn cache<T: Cached>(&self, cpu: usize, pool: Pool) -> &Cache<T> {
        self.of_cpu(cpu).cache(pool)
    }

    /// CPU `cpu`'s magazine of `T` for `pool`, unless someone holds it.
    #[inline]
    pub(crate) fn try_lock<T: Cached>(&self, cpu: usize, pool: Pool) -> Option<CacheGuard<'_, T>> {
        self.of_cpu(cpu).try_lock(pool)
    }

    /// Every CPU and pool.
    fn all() -> impl Iterator<Item = (usize, Pool)> {
        // A plain range, not nested iterators: page_check's stack stays small.
        (0..2 * KPALLOC_MAX_CPUS).map(|index| {
            let pool = if index % 2 == 0 { Pool::Kernel } else { Pool::User };
            (index / 2, pool)
        })
    }

    /// Every magazine of `T` no one holds, held.
    pub(crate) fn try_lock_each<T: Cached>(&self) -> impl Iterator<Item = CacheGuard<'_, T>> {
        Self::all().filter_map(|(cpu, pool)| self.try_lock(cpu, pool))
    }

    /// Every magazine, held, waiting for each a bounded time: `None` if one
    /// stays held by someone else (as by a call interrupted on this CPU).
    pub(crate) fn hold_all(&self) -> Option<HeldMagazines<'_>> {
        // A cache operation holds its magazine for at most a refill or a
        // flush (a few microseconds); 4096 pauses wait longer than that.
        let held = self.hold(1 << 12, true);
        (held.page_magazines == ALL_MAGAZINES && held.block_magazines == ALL_MAGAZINES).then_some(held)
    }

    /// Every magazine it can take within a few tries each (another CPU's
    /// cache operation takes tens of nanoseconds), held. One that stays
    /// busy is held by a call interrupted (as by this one, on its own CPU)
    /// or preempted, which cannot change it meanwhile, or by a flush or
    /// refill waiting for the allocator's lock.
    pub(crate) fn hold_available(&self) -> HeldMagazines<'_> {
        self.hold(64, false)
    }

    /// Every magazine it can take in `attempts` tries each, held; with
    /// `all_or_none`, none after the first it cannot take (the caller gives
    /// up then, and waits for no other busy one).
    fn hold(&self, attempts: usize, all_or_none: bool) -> HeldMagazines<'_> {
        let page_magazines = self.hold_each::<CachedPage>(attempts, all_or_none);
        let block_magazines = match all_or_none && page_magazines != ALL_MAGAZINES {
            true => 0,
            false => self.hold_each::<CachedBlock>(attempts, all_or_none),
        };
        HeldMagazines {
            caches: self,
            page_magazines,
            block_magazines,
        }
    }

    /// Takes each magazine of `T` in turn, in up to `attempts` tries (with
    /// `all_or_none`, up to the first it cannot take); returns the set of
    /// those it took.
    fn hold_each<T: Cached>(&self, attempts: usize, all_or_none: bool) -> Magazines {
        let mut held = 0;
        for (index, (cpu, pool)) in Self::all().enumerate() {
            let magazine = &self.cache::<T>(cpu, pool).magazine;
            let taken = (0..attempts).any(|_| {
                core::hint::spin_loop();
                magazine.try_hold()
            });
            if !taken && all_or_none {
                break;
            }
            held |= Magazines::from(taken) << index;
        }
        held
    }

    /// The CPUs and pools of the magazines in `set`.
    fn members(set: Magazines) -> impl Iterator<Item = (usize, Pool)> {
        Self::all()
            .enumerate()
            .filter(move |(index, _)| set >> index & 1 != 0)
            .map(|(_, member)| member)
    }

    /// Releases the magazines of `T` in `set`, held by
    /// [`CpuCaches::hold_each`].
    fn release<T: Cached>(&self, set: Magazines) {
        for (cpu, pool) in Self::members(set) {
            // SAFETY: hold_each took it with try_hold, and no borrow from
            // `held` outlives the HeldMagazines that releases it.
            unsafe { self.cache::<T>(cpu, pool).magazine.release_hold() };
        }
    }

    /// The entries of the magazines of `T` in `set`, held.
    fn held_entries<T: Cached>(&self, set: Magazines) -> impl Iterator<Item = T> + '_ {
        Self::members(set).flat_map(|(cpu, pool)| {
            // SAFETY: the caller holds the magazines in `set` (taken with
            // try_hold) for as long as this borrow lives.
            let magazine = unsafe { self.cache::<T>(cpu, pool).magazine.held() };
            magazine.entries()
        })
    }

    /// Pages cached for `pool`, as of the last change of each magazine.
    pub(crate) fn cached_pages(&self, pool: Pool) -> u64 {
        self.cpus
            .iter()
            .map(|cpu| {
                let pages = &cpu.pages[pool as usize].pages;
                let blocks = &cpu.blocks[pool as usize].pages;
                pages.load(Ordering::Relaxed) as u64 + blocks.load(Ordering::Relaxed) as u64
            })
            .sum()
    }
}

/// A set of the magazines of one kind: bit `i` for the `i`th CPU and pool
/// of [`CpuCaches::all`].
type Magazines = u64;
/// Every magazine of one kind.
const ALL_MAGAZINES: Magazines = Magazines::MAX >> (Magazines::BITS as usize - 2 * KPALLOC_MAX_CPUS);
const _: () = assert!(
    2 * KPALLOC_MAX_CPUS <= Magazines::BITS as usize,
    "a bit per CPU and pool"
);

/// Magazines of a [`CpuCaches`] (every one, or those it could take),
/// held until dropped.
pub(crate) struct HeldMagazines<'c> {
    caches: &'c CpuCaches,
    page_magazines: Magazines,
    block_magazines: Magazines,
}

impl HeldMagazines<'_> {
    /// Every cached page or block: its head and its length.
    pub(crate) fn blocks(&self) -> impl Iterator<Item = (CachedPage, usize)> + '_ {
        let pages = self.caches.held_entries::<CachedPage>(self.page_magazines);
        let blocks = self.caches.held_entries::<CachedBlock>(self.block_magazines);
        pages
            .map(|page| (page, 1))
            .chain(blocks.map(|block| (block.head, block.pages)))
    }
}

impl Drop for HeldMagazines<'_> {
    fn drop(&mut self) {
        self.caches.release::<CachedPage>(self.page_magazines);
        self.caches.release::<CachedBlock>(self.block_magazines);
    }
}

/// A locked magazine; publishes its page count for `page_stats` when
/// dropped.
pub(crate) struct CacheGuard<'c, T: Cached = CachedPage> {
    magazine: TryLockGuard<'c, Magazine<T>>,
    pages: &'c AtomicU32,
}

impl<T: Cached> Deref for CacheGuard<'_, T> {
    type Target = Magazine<T>;
    fn deref(&self) -> &Magazine<T> {
        &self.magazine
    }
}

impl<T: Cached> DerefMut for CacheGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut Magazine<T> {
        &mut self.magazine
    }
}

impl<T: Cached> CacheGuard<'_, T> {
    /// Publishes the magazine's page count for `page_stats`. Refills and
    /// flushes call it under the allocator's lock, where the used-page
    /// count it is subtracted from changes.
    #[inline]
    pub(crate) fn publish(&self) {
        self.pages.store(T::pages_in(&self.magazine) as u32, Ordering::Relaxed);
    }
}

impl<T: Cached> Drop for CacheGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    impl MagazineEntry for usize {
        type Entries = [Option<usize>; 8];
        const NO_ENTRIES: Self::Entries = [None; 8];
    }

    #[test]
    fn a_magazine_is_a_bounded_stack_that_forgets_its_oldest() {
        let mut magazine = Magazine::<usize>::new();
        assert_eq!(magazine.pop(), None);
        for entry in 0..8 {
            assert!(magazine.push(entry));
        }
        assert!(!magazine.push(99), "full");
        magazine.forget_oldest(3);
        assert_eq!(magazine.entries().next(), Some(3));
        assert_eq!(magazine.pop(), Some(7));
        assert_eq!(magazine.len(), 4);
    }

    #[test]
    fn a_magazine_hands_out_the_latest_entry_that_matches() {
        let mut magazine = Magazine::<usize>::new();
        for entry in [2, 8, 4, 8, 2] {
            magazine.push(entry);
        }
        assert_eq!(magazine.take_latest(|&e| e == 8), Some(8));
        assert_eq!(
            magazine.entries().collect::<Vec<_>>(),
            [2, 8, 4, 2],
            "the later ones move down"
        );
        assert_eq!(magazine.take_latest(|&e| e == 1), None);
        assert_eq!(magazine.take_latest(|&e| e == 2), Some(2));
        assert_eq!(magazine.entries().collect::<Vec<_>>(), [2, 8, 4]);
        assert_eq!(magazine.room(), 5);
    }

    #[test]
    fn a_held_magazine_is_skipped_not_waited_for() {
        let caches = CpuCaches::new();
        let mut held = caches.try_lock::<CachedPage>(1, Pool::User).unwrap();
        assert!(caches.try_lock::<CachedPage>(1, Pool::User).is_none());
        assert!(
            caches
                .try_lock::<CachedPage>(1 + KPALLOC_MAX_CPUS, Pool::User)
                .is_none(),
            "numbers wrap"
        );
        assert!(caches.try_lock::<CachedPage>(1, Pool::Kernel).is_some());
        assert!(
            caches.try_lock::<CachedBlock>(1, Pool::User).is_some(),
            "blocks have their own"
        );
        held.len = 1;
        assert_eq!(caches.cached_pages(Pool::User), 0, "published on release");
        drop(held);
        assert_eq!(caches.cached_pages(Pool::User), 1);
        caches.try_lock::<CachedPage>(1, Pool::User).unwrap().len = 0;
        assert_eq!(caches.try_lock_each::<CachedPage>().count(), 2 * KPALLOC_MAX_CPUS);
        let all = caches.hold_all().unwrap();
        assert_eq!(all.blocks().count(), 0);
        assert!(caches.try_lock::<CachedPage>(3, Pool::Kernel).is_none(), "all held");
        assert!(caches.try_lock::<CachedBlock>(3, Pool::Kernel).is_none(), "all held");
        drop(all);
        let guard = caches.try_lock::<CachedBlock>(3, Pool::Kernel).unwrap();
        assert!(caches.hold_all().is_none(), "one stays busy");
        drop(guard);
        assert!(
            caches.try_lock::<CachedPage>(0, Pool::Kernel).is_some()
                && caches.try_lock::<CachedBlock>(0, Pool::Kernel).is_some(),
            "a failed hold_all holds nothing"
        );
        // A busy magazine of single pages: hold_all gives up before the
        // blocks' magazines, and releases what it took.
        let guard = caches.try_lock::<CachedPage>(1, Pool::Kernel).unwrap();
        assert!(caches.hold_all().is_none());
        drop(guard);
        assert!(
            caches.try_lock::<CachedPage>(0, Pool::Kernel).is_some()
                && caches.try_lock::<CachedPage>(5, Pool::User).is_some()
                && caches.try_lock::<CachedBlock>(5, Pool::User).is_some(),
            "a failed hold_all holds nothing"
        );
    }

    #[test]
    fn hold_available_holds_every_magazine_but_a_busy_one() {
        let caches = CpuCaches::new();
        let mut busy = caches.try_lock::<CachedPage>(2, Pool::Kernel).unwrap();
        let available = caches.hold_available();
        assert!(caches.try_lock::<CachedPage>(5, Pool::User).is_none(), "held");
        assert!(caches.try_lock::<CachedBlock>(2, Pool::Kernel).is_none(), "held");
        busy.len = 1;
        drop(busy);
        assert_eq!(caches.cached_pages(Pool::Kernel), 1, "the busy one still changes");
        let mut again = caches.try_lock::<CachedPage>(2, Pool::Kernel).expect("not held");
        drop(available);
        assert!(caches.try_lock::<CachedPage>(5, Pool::User).is_some(), "released");
        assert!(
            caches.try_lock::<CachedPage>(2, Pool::Kernel).is_none(),
            "the busy one is not released by the hold that skipped it"
        );
        again.len = 0;
        drop(again);
        assert!(caches.hold_all().is_some());
    }
}
