//! The small synchronisation pieces the safe core is built on.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

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

/// A lock that is only ever tried, never waited for, so that a holder
/// interrupted on its own CPU can never deadlock the interrupt handler.
/// Besides guards, it can be held with no guard at all ([`TryLock::try_hold`]),
/// so that `page_check` holds every CPU's cache in a few bytes of stack.
pub(crate) struct TryLock<T> {
    busy: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the value is only reached through a guard, and `busy` lets at most
// one guard exist at a time (Acquire on taking, Release on dropping order
// the accesses); `T: Send` lets that one access move threads.
unsafe impl<T: Send> Sync for TryLock<T> {}

impl<T> TryLock<T> {
    pub(crate) const fn new(value: T) -> Self {
        TryLock {
            busy: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// The value, unless someone holds it.
    #[inline]
    pub(crate) fn try_lock(&self) -> Option<TryLockGuard<'_, T>> {
        self.busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        Some(TryLockGuard { lock: self })
    }

    /// Takes the lock without a guard, unless someone holds it; `true` if
    /// taken. Until [`TryLock::release_hold`], only [`TryLock::held`]
    /// reaches the value.
    pub(crate) fn try_hold(&self) -> bool {
        self.try_lock().map(core::mem::forget).is_some()
    }

    /// The value of a lock taken with `try_hold`.
    ///
    /// # Safety
    /// The caller took this lock with `try_hold` and has not released it
    /// since, for as long as the returned borrow lives.
    pub(crate) unsafe fn held(&self) -> &T {
        // SAFETY: held without a guard, so nothing else reaches the value;
        // the caller only reads it.
        unsafe { &*self.value.get() }
    }

    /// Releases a lock taken with `try_hold`.
    ///
    /// # Safety
    /// The caller took this lock with `try_hold`, has not released it since,
    /// and keeps no borrow from `held`.
    pub(crate) unsafe fn release_hold(&self) {
        self.busy.store(false, Ordering::Release);
    }
}

/// Holds a [`TryLock`] until dropped.
pub(crate) struct TryLockGuard<'a, T> {
    lock: &'a TryLock<T>,
}

impl<T> Deref for TryLockGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: this guard is the only one (see the Sync impl), and `&self`
        // lends the value no longer than the guard lives.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for TryLockGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes this borrow unique.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for TryLockGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.lock.busy.store(false, Ordering::Release);
    }
}

/// A value on cache lines of its own: another CPU writing it (taking a
/// lock, using its own cache) then does not evict what this CPU reads
/// next to it.
#[repr(align(64))]
pub(crate) struct OwnLines<T>(pub(crate) T);

impl<T> Deref for OwnLines<T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}
