//! Per-CPU caches of free single pages: the way past the allocator's lock.
//!
//! Each CPU has a small stack of free pages per pool (a magazine, as in
//! Bonwick's slab allocator). A single-page allocation pops from it and a
//! single-page free pushes onto it without the allocator's lock; only a
//! refill from the bitmaps or a flush back to them, a few pages at a time,
//! takes the lock.
//!
//! Every magazine is taken with `try_lock` and never waited for, so the CPU
//! number only picks a cache: a wrong one (a thread migrated mid-call) or
//! a busy one (an interrupt handler that interrupted a cache operation on
//! its own CPU) sends the call to the locked path, never into a deadlock.
//!
//! Cached pages stay "used" in the bitmaps and their slots say cached, so
//! `check` sees each of them and every misuse check still holds.

use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::region::Region;
use crate::sync::{OwnLines, TryLock, TryLockGuard};
use crate::types::{Pfn, Pool, KPALLOC_MAX_CPUS};

/// Pages one magazine holds.
pub(crate) const MAGAZINE_PAGES: usize = 32;
/// Pages a refill takes from the bitmaps, and a flush gives back, at once:
/// half a magazine, so that alternating allocations and frees never
/// refill and flush in turn.
pub(crate) const BATCH_PAGES: usize = MAGAZINE_PAGES / 2;

/// A cached page: its region and bit, so that neither an allocation nor a
/// flush has to look the region up.
#[derive(Clone, Copy)]
pub(crate) struct CachedPage {
    pub(crate) region: &'static Region,
    pub(crate) bit: usize,
}

impl CachedPage {
    pub(crate) fn pfn(&self) -> Pfn {
        self.region.pfn_of(self.bit)
    }
}

/// A stack of free pages (`T`: [`CachedPage`]) of one pool, for one CPU.
pub(crate) struct Magazine<T = CachedPage> {
    len: usize,
    pages: [Option<T>; MAGAZINE_PAGES],
}

impl<T: Copy> Magazine<T> {
    const fn new() -> Self {
        Magazine {
            len: 0,
            pages: [None; MAGAZINE_PAGES],
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Pages it can still take.
    pub(crate) fn room(&self) -> usize {
        MAGAZINE_PAGES - self.len
    }

    /// The most recently cached page (the likeliest to be in the CPU's
    /// data cache).
    #[inline]
    pub(crate) fn pop(&mut self) -> Option<T> {
        self.len = self.len.checked_sub(1)?;
        self.pages[self.len]
    }

    /// Caches `page`; `false` if the magazine is full.
    #[inline]
    pub(crate) fn push(&mut self, page: T) -> bool {
        let Some(slot) = self.pages.get_mut(self.len) else {
            return false;
        };
        *slot = Some(page);
        self.len += 1;
        true
    }

    /// The cached pages, oldest first.
    pub(crate) fn pages(&self) -> impl Iterator<Item = T> + '_ {
        self.pages[..self.len].iter().flatten().copied()
    }

    /// Drops the `count` oldest pages (the caller has given them back).
    pub(crate) fn forget_oldest(&mut self, count: usize) {
        let count = count.min(self.len);
        self.pages.copy_within(count..self.len, 0);
        self.len -= count;
    }
}

/// One magazine and its length, readable without its lock for `page_stats`.
struct Cache {
    magazine: TryLock<Magazine>,
    pages: AtomicU32,
}

impl Cache {
    const fn new() -> Self {
        Cache {
            magazine: TryLock::new(Magazine::new()),
            pages: AtomicU32::new(0),
        }
    }
}

/// The per-CPU page caches of one allocator: `KPALLOC_MAX_CPUS` CPUs, each
/// with a magazine per pool. CPU numbers from `KPALLOC_MAX_CPUS` up share
/// (number modulo `KPALLOC_MAX_CPUS`).
///
/// Const-constructible, so that it lives in a `static` and costs no stack:
/// `static CACHES: CpuCaches = CpuCaches::new();`.
pub struct CpuCaches {
    /// Each CPU's caches, one per pool.
    cpus: [OwnLines<[Cache; 2]>; KPALLOC_MAX_CPUS],
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
            cpus: [const { OwnLines([Cache::new(), Cache::new()]) }; KPALLOC_MAX_CPUS],
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
        let mut emptied = 0;
        for mut cache in self.try_lock_each() {
            let count = cache.len();
            cache.forget_oldest(count);
            emptied += 1;
        }
        if emptied == 2 * KPALLOC_MAX_CPUS {
            self.claimed.store(false, Ordering::Release);
        }
    }

    fn cache(&self, cpu: usize, pool: Pool) -> &Cache {
        &self.cpus[cpu % KPALLOC_MAX_CPUS][pool as usize]
    }

    /// CPU `cpu`'s magazine for `pool`, unless someone holds it.
    #[inline]
    pub(crate) fn try_lock(&self, cpu: usize, pool: Pool) -> Option<CacheGuard<'_>> {
        let cache = self.cache(cpu, pool);
        Some(CacheGuard {
            magazine: cache.magazine.try_lock()?,
            pages: &cache.pages,
        })
    }

    /// Every magazine's CPU and pool.
    pub(crate) fn all() -> impl Iterator<Item = (usize, Pool)> {
        // A plain range, not nested iterators: page_check's stack stays small.
        (0..2 * KPALLOC_MAX_CPUS).map(|index| {
            let pool = if index % 2 == 0 { Pool::Kernel } else { Pool::User };
            (index / 2, pool)
        })
    }

    /// Every magazine no one holds, held.
    pub(crate) fn try_lock_each(&self) -> impl Iterator<Item = CacheGuard<'_>> {
        Self::all().filter_map(|(cpu, pool)| self.try_lock(cpu, pool))
    }

    /// Every magazine, held, waiting for each a bounded time: `None` if one
    /// stays held by someone else (as by a call interrupted on this CPU).
    pub(crate) fn hold_all(&self) -> Option<AllHeld<'_>> {
        let mut held = AllHeld { caches: self, count: 0 };
        for (cpu, pool) in Self::all() {
            let magazine = &self.cache(cpu, pool).magazine;
            // A cache operation holds its magazine for at most a refill or a
            // flush (a few microseconds); 4096 pauses wait longer than that.
            (0..1 << 12).find(|_| {
                core::hint::spin_loop();
                magazine.try_hold()
            })?;
            held.count += 1;
        }
        Some(held)
    }

    /// Pages cached for `pool`, as of the last change of each magazine.
    pub(crate) fn cached_pages(&self, pool: Pool) -> u64 {
        self.cpus
            .iter()
            .map(|cpu| cpu[pool as usize].pages.load(Ordering::Relaxed) as u64)
            .sum()
    }
}

/// Every magazine of a [`CpuCaches`] (the first `count`, in
/// [`CpuCaches::all`] order), held until dropped.
pub(crate) struct AllHeld<'c> {
    caches: &'c CpuCaches,
    count: usize,
}

impl AllHeld<'_> {
    /// Every cached page.
    pub(crate) fn pages(&self) -> impl Iterator<Item = CachedPage> + '_ {
        CpuCaches::all().take(self.count).flat_map(|(cpu, pool)| {
            // SAFETY: this holds the first `count` magazines (taken with
            // try_hold), and the borrow ends before `self` is dropped.
            let magazine = unsafe { self.caches.cache(cpu, pool).magazine.held() };
            magazine.pages()
        })
    }
}

impl Drop for AllHeld<'_> {
    fn drop(&mut self) {
        for (cpu, pool) in CpuCaches::all().take(self.count) {
            // SAFETY: held since hold_all took it; `pages` borrows end with
            // `&self`, before drop.
            unsafe { self.caches.cache(cpu, pool).magazine.release_hold() };
        }
    }
}

/// A locked magazine; publishes its length for `page_stats` when dropped.
pub(crate) struct CacheGuard<'c> {
    magazine: TryLockGuard<'c, Magazine>,
    pages: &'c AtomicU32,
}

impl Deref for CacheGuard<'_> {
    type Target = Magazine;
    fn deref(&self) -> &Magazine {
        &self.magazine
    }
}

impl DerefMut for CacheGuard<'_> {
    fn deref_mut(&mut self) -> &mut Magazine {
        &mut self.magazine
    }
}

impl CacheGuard<'_> {
    /// Publishes the magazine's length for `page_stats`. Refills and
    /// flushes call it under the allocator's lock, where the used-page
    /// count it is subtracted from changes.
    #[inline]
    pub(crate) fn publish(&self) {
        self.pages.store(self.magazine.len as u32, Ordering::Relaxed);
    }
}

impl Drop for CacheGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_magazine_is_a_bounded_stack_that_forgets_its_oldest() {
        let mut magazine = Magazine::<usize>::new();
        assert_eq!(magazine.pop(), None);
        for page in 0..MAGAZINE_PAGES {
            assert!(magazine.push(page));
        }
        assert!(!magazine.push(99), "full");
        magazine.forget_oldest(BATCH_PAGES);
        assert_eq!(magazine.pages().next(), Some(BATCH_PAGES));
        assert_eq!(magazine.pop(), Some(MAGAZINE_PAGES - 1));
        assert_eq!(magazine.len(), MAGAZINE_PAGES - BATCH_PAGES - 1);
    }

    #[test]
    fn a_held_magazine_is_skipped_not_waited_for() {
        let caches = CpuCaches::new();
        let mut held = caches.try_lock(1, Pool::User).unwrap();
        assert!(caches.try_lock(1, Pool::User).is_none());
        assert!(
            caches.try_lock(1 + KPALLOC_MAX_CPUS, Pool::User).is_none(),
            "numbers wrap"
        );
        assert!(caches.try_lock(1, Pool::Kernel).is_some());
        held.len = 1;
        assert_eq!(caches.cached_pages(Pool::User), 0, "published on release");
        drop(held);
        assert_eq!(caches.cached_pages(Pool::User), 1);
        caches.try_lock(1, Pool::User).unwrap().len = 0;
        assert_eq!(caches.try_lock_each().count(), 2 * KPALLOC_MAX_CPUS);
        let all = caches.hold_all().unwrap();
        assert_eq!(all.pages().count(), 0);
        assert!(caches.try_lock(3, Pool::Kernel).is_none(), "all held");
        drop(all);
        let guard = caches.try_lock(3, Pool::Kernel).unwrap();
        assert!(caches.hold_all().is_none(), "one stays busy");
        drop(guard);
        assert!(
            caches.try_lock(0, Pool::Kernel).is_some(),
            "a failed hold_all holds nothing"
        );
    }
}
