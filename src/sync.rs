//! The two small synchronisation pieces the safe core is built on.

use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

/// Proof of holding an allocator's lock: a `&mut` to its locked state, which
/// carries the allocator's identity.
pub(crate) trait LockToken {
    fn owner_id(&self) -> u64;
}

/// Data that lives outside the lock's own struct (in a region's metadata
/// pages) but is guarded by it: reachable only through the `&mut` token the
/// lock hands out, so at most one `&mut T` exists at a time.
pub(crate) struct LockedBy<T> {
    owner_id: u64,
    value: UnsafeCell<T>,
}

// SAFETY: the value is only reached through `get`, which requires exclusive
// access to the owning lock's state, so sharing `&LockedBy<T>` across threads
// hands out no aliasing access; `T: Send` lets that one access move threads.
unsafe impl<T: Send> Sync for LockedBy<T> {}

impl<T> LockedBy<T> {
    pub(crate) const fn new(owner_id: u64, value: T) -> Self {
        LockedBy {
            owner_id,
            value: UnsafeCell::new(value),
        }
    }

    /// The guarded value, for as long as the lock is held.
    #[inline]
    pub(crate) fn get<'a, L: LockToken>(&'a self, token: &'a mut L) -> &'a mut T {
        assert_eq!(
            token.owner_id(),
            self.owner_id,
            "region used with another allocator's lock"
        );
        // SAFETY: `token` is the unique `&mut` to the owning allocator's
        // locked state (checked by id), borrowed for 'a: no other `get` on
        // any value guarded by that lock can run until 'a ends.
        unsafe { &mut *self.value.get() }
    }
}

/// A `&'static T` that can be replaced while lock-free readers load it.
pub(crate) struct Published<T: 'static> {
    current: AtomicPtr<T>,
}

impl<T: Sync + 'static> Published<T> {
    pub(crate) const fn empty() -> Self {
        Published {
            current: AtomicPtr::new(ptr::null_mut()),
        }
    }

    #[inline]
    pub(crate) fn load(&self) -> Option<&'static T> {
        let current = self.current.load(Ordering::Acquire);
        // SAFETY: only `publish` stores here, and only pointers made from a
        // `&'static T`; the Acquire load pairs with its Release store, so the
        // pointee's initialisation is visible.
        unsafe { current.as_ref() }
    }

    pub(crate) fn publish(&self, value: &'static T) {
        self.current.store(ptr::from_ref(value).cast_mut(), Ordering::Release);
    }
}
