//! The reference-count protocol on a head page's slot. `get`, and `put`
//! while the count stays above one, are lock-free compare-and-swaps; the
//! last reference is taken, under the allocator's lock, from 1 to 0, so
//! that a racing `get` either gets in first (and the block lives on) or
//! finds the page free (and never brings it back). Generic over the atomic
//! so that loom can check every interleaving (`RUSTFLAGS="--cfg loom"
//! cargo test --release --lib refcount`).

#![deny(unsafe_code)]

use crate::region::Slot;
use crate::status::PageStatus;
use crate::types::PAGE_REFCOUNT_MAX;

/// A page's slot: the few atomic operations the protocol needs.
pub(crate) trait SlotCell {
    fn load(&self) -> u32;
    /// `compare_exchange` with acquire-release ordering.
    fn replace(&self, current: u32, new: u32) -> Result<u32, u32>;
}

macro_rules! slot_cell {
    ($atomic:ty) => {
        impl SlotCell for $atomic {
            #[inline]
            fn load(&self) -> u32 {
                self.load(core::sync::atomic::Ordering::Acquire)
            }

            #[inline]
            fn replace(&self, current: u32, new: u32) -> Result<u32, u32> {
                use core::sync::atomic::Ordering::{AcqRel, Acquire};
                self.compare_exchange(current, new, AcqRel, Acquire)
            }
        }
    };
}

slot_cell!(core::sync::atomic::AtomicU32);
#[cfg(loom)]
slot_cell!(loom::sync::atomic::AtomicU32);

/// The head's count, or why the page is no head of an allocated block.
#[inline]
fn head_count(raw: u32) -> Result<u32, PageStatus> {
    match Slot::decode(raw) {
        Slot::Free { .. } | Slot::Cached => Err(PageStatus::ENOTALLOCATED),
        Slot::Interior(_) => Err(PageStatus::ENOTHEAD),
        Slot::Head(count) => Ok(count),
    }
}

/// Adds a reference.
#[inline]
pub(crate) fn get(slot: &impl SlotCell) -> Result<(), PageStatus> {
    let mut raw = slot.load();
    loop {
        let count = head_count(raw)?;
        if count == PAGE_REFCOUNT_MAX {
            return Err(PageStatus::EOVERFLOW);
        }
        match slot.replace(raw, count + 1) {
            Ok(_) => return Ok(()),
            Err(now) => raw = now,
        }
    }
}

/// What [`put_unless_last`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Put {
    /// Dropped a reference; others remain.
    Done,
    /// The reference is the last one: the caller takes the lock and calls
    /// [`take_last`].
    Last,
}

/// Drops a reference unless it is the last one.
#[inline]
pub(crate) fn put_unless_last(slot: &impl SlotCell) -> Result<Put, PageStatus> {
    let mut raw = slot.load();
    loop {
        match head_count(raw)? {
            1 => return Ok(Put::Last),
            count => match slot.replace(raw, count - 1) {
                Ok(_) => return Ok(Put::Done),
                Err(now) => raw = now,
            },
        }
    }
}

/// Under the allocator's lock (or a page cache's): takes a sole reference
/// from 1 to `freed`, the slot of a free or a cached page (the caller then
/// frees the block), or refuses with `ESHARED` if the block is shared.
/// `check_head` may refuse the call once a head is seen.
#[inline]
pub(crate) fn take_last(
    slot: &impl SlotCell,
    check_head: impl Fn() -> Result<(), PageStatus>,
    freed: u32,
) -> Result<(), PageStatus> {
    loop {
        let raw = slot.load();
        let count = head_count(raw)?;
        check_head()?;
        if count != 1 {
            return Err(PageStatus::ESHARED);
        }
        // A lock-free get may race us to the count.
        if slot.replace(1, freed).is_ok() {
            return Ok(());
        }
    }
}

/// [`take_last`] without a check: one compare-and-swap from 1 to `freed`,
/// whose failure tells why (no load before it on the free path's chain of
/// dependent steps).
#[inline]
pub(crate) fn take_sole(slot: &impl SlotCell, freed: u32) -> Result<(), PageStatus> {
    match slot.replace(1, freed) {
        Ok(_) => Ok(()),
        // Not 1: shared, or no head of an allocated block.
        Err(raw) => head_count(raw).and(Err(PageStatus::ESHARED)),
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::AtomicU32;
    use loom::sync::{Arc, Mutex};
    use loom::thread;
    use std::vec::Vec;

    /// The two ways the last reference is taken: looking at the head first
    /// (a free told the block's length checks it), and by one
    /// compare-and-swap (every other free, locked or into a page cache).
    const TAKERS: [fn(&AtomicU32) -> Result<(), PageStatus>; 2] =
        [|slot| take_last(slot, || Ok(()), 0), |slot| take_sole(slot, 0)];

    /// `put` as the allocator does it, with `freed` standing for the block's
    /// pages going back under the lock.
    fn put(slot: &AtomicU32, lock: &Mutex<bool>, take: fn(&AtomicU32) -> Result<(), PageStatus>) {
        loop {
            match put_unless_last(slot).unwrap() {
                Put::Done => return,
                Put::Last => {
                    let mut freed = lock.lock().unwrap();
                    match take(slot) {
                        Ok(()) => {
                            assert!(!*freed, "freed twice");
                            *freed = true;
                            return;
                        }
                        // A get came in: drop again.
                        Err(PageStatus::ESHARED) => {}
                        Err(status) => panic!("{status:?}"),
                    }
                }
            }
        }
    }

    #[test]
    fn the_last_put_racing_a_get_frees_exactly_when_the_get_fails() {
        for take in TAKERS {
            the_last_put_racing_a_get(take);
        }
    }

    fn the_last_put_racing_a_get(take: fn(&AtomicU32) -> Result<(), PageStatus>) {
        loom::model(move || {
            let slot = Arc::new(AtomicU32::new(2));
            let lock = Arc::new(Mutex::new(false));
            let putters: Vec<_> = (0..2)
                .map(|_| {
                    let (slot, lock) = (slot.clone(), lock.clone());
                    thread::spawn(move || put(&slot, &lock, take))
                })
                .collect();
            let got = get(&*slot);
            for putter in putters {
                putter.join().unwrap();
            }
            let freed = *lock.lock().unwrap();
            match got {
                Ok(()) => assert!(
                    !freed && SlotCell::load(&*slot) == 1,
                    "a get that succeeded holds the block"
                ),
                Err(status) => {
                    assert_eq!(status, PageStatus::ENOTALLOCATED);
                    assert!(freed && SlotCell::load(&*slot) == 0, "a failed get found it freed");
                }
            }
        });
    }

    #[test]
    fn a_get_and_a_put_of_a_sole_reference_never_lose_a_count() {
        for take in TAKERS {
            a_get_and_a_put_of_a_sole_reference(take);
        }
    }

    fn a_get_and_a_put_of_a_sole_reference(take: fn(&AtomicU32) -> Result<(), PageStatus>) {
        loom::model(move || {
            let slot = Arc::new(AtomicU32::new(1));
            let lock = Arc::new(Mutex::new(false));
            let getter = {
                let slot = slot.clone();
                thread::spawn(move || get(&*slot).is_ok())
            };
            put(&slot, &lock, take);
            let got = getter.join().unwrap();
            let freed = *lock.lock().unwrap();
            // Either the get came first (one reference left, not freed) or
            // the block was freed and the get refused.
            assert_eq!(
                (got, freed, SlotCell::load(&*slot)),
                if got { (true, false, 1) } else { (false, true, 0) }
            );
        });
    }
}
