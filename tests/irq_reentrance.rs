//! Interrupt reentrance on the host, through the C ABI's global allocator:
//! SIGUSR1 stands for an interrupt. The irq_save/irq_restore hooks mask it
//! with pthread_sigmask; its handler allocates, shares and frees pages while
//! the interrupted thread loops allocating and freeing. Nothing may
//! deadlock, every count must balance, and every irq_save must be undone by
//! exactly one irq_restore with its own value, in LIFO order. A `cpu_id`
//! hook turns the per-CPU page cache on, so the handler also lands in the
//! middle of cache operations.
//!
//! One test in this file: the global can be set up only once per process.

mod common;

use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::TestMemory;
use kpalloc::ffi::{
    page_alloc, page_alloc_aligned, page_check, page_free, page_get, page_init, page_put, page_region_add, page_split,
    page_stats_get,
};
use kpalloc::{PageConfig, PageStats, PageStatus};

static SAVES: AtomicU64 = AtomicU64::new(0);
static RESTORES: AtomicU64 = AtomicU64::new(0);
/// Hooks currently open on the interrupted thread (the only kpalloc caller).
static DEPTH: AtomicI64 = AtomicI64::new(0);
static MAX_DEPTH: AtomicI64 = AtomicI64::new(0);
/// The value each open irq_save returned, by depth.
static STACK: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];
static UNBALANCED: AtomicU64 = AtomicU64::new(0);
static MISUSE: AtomicU64 = AtomicU64::new(0);

static HANDLER_RUNS: AtomicU64 = AtomicU64::new(0);
static HANDLER_IN_CRITICAL: AtomicU64 = AtomicU64::new(0);
static HANDLER_ALLOCS: AtomicU64 = AtomicU64::new(0);
static HANDLER_FREES: AtomicU64 = AtomicU64::new(0);
static HANDLER_ENOMEM: AtomicU64 = AtomicU64::new(0);
static HANDLER_ERRORS: AtomicU64 = AtomicU64::new(0);
static PROGRESS: AtomicU64 = AtomicU64::new(0);

fn usr1_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise the set.
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        set
    }
}

/// Masks SIGUSR1; returns whether it was masked already (bit 0) and a
/// nonce (the other bits) so that restores can be matched to saves.
extern "C" fn irq_save() -> u64 {
    let set = usr1_set();
    // SAFETY: valid sets; pthread_sigmask is async-signal-safe.
    let was_masked = unsafe {
        let mut old = std::mem::zeroed::<libc::sigset_t>();
        assert_eq!(libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old), 0);
        libc::sigismember(&old, libc::SIGUSR1) == 1
    };
    let nonce = SAVES.fetch_add(1, Ordering::SeqCst) + 1;
    let token = nonce << 1 | was_masked as u64;
    let depth = DEPTH.fetch_add(1, Ordering::SeqCst);
    MAX_DEPTH.fetch_max(depth + 1, Ordering::SeqCst);
    match STACK.get(depth as usize) {
        Some(slot) => slot.store(token, Ordering::SeqCst),
        None => {
            UNBALANCED.fetch_add(1, Ordering::SeqCst);
        }
    }
    token
}

/// Unmasks SIGUSR1 unless the matching save found it masked.
extern "C" fn irq_restore(token: u64) {
    RESTORES.fetch_add(1, Ordering::SeqCst);
    let depth = DEPTH.fetch_sub(1, Ordering::SeqCst) - 1;
    if depth < 0 || STACK.get(depth as usize).map(|s| s.load(Ordering::SeqCst)) != Some(token) {
        UNBALANCED.fetch_add(1, Ordering::SeqCst);
    }
    if token & 1 == 0 {
        let set = usr1_set();
        // SAFETY: a valid set.
        unsafe { assert_eq!(libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, ptr::null_mut()), 0) };
    }
}

extern "C" fn on_misuse(_status: PageStatus, _addr: *const c_void) {
    MISUSE.fetch_add(1, Ordering::SeqCst);
}

fn ok(status: PageStatus) {
    if status != PageStatus::OK {
        HANDLER_ERRORS.fetch_add(1, Ordering::SeqCst);
    }
}

/// The "interrupt": allocates, shares, splits and frees.
extern "C" fn on_signal(_signal: libc::c_int) {
    let run = HANDLER_RUNS.fetch_add(1, Ordering::SeqCst);
    // SAFETY (the three releases): they give up only references this code
    // took itself, which no handle holds.
    let free = |block: *mut c_void| unsafe { page_free(block) };
    let put = |block: *mut c_void| unsafe { page_put(block) };
    let split = |block: *mut c_void| unsafe { page_split(block) };
    if DEPTH.load(Ordering::SeqCst) != 0 {
        // The hooks were open: the allocator's lock may be held right now.
        HANDLER_IN_CRITICAL.fetch_add(1, Ordering::SeqCst);
        return;
    }
    let pages = 1 + run as usize % 3;
    let block = page_alloc(pages, kpalloc::types::PAGE_ALLOC_ZERO);
    if block.is_null() {
        HANDLER_ENOMEM.fetch_add(1, Ordering::SeqCst);
        return;
    }
    HANDLER_ALLOCS.fetch_add(1, Ordering::SeqCst);
    ok(page_get(block));
    ok(put(block));
    if run % 4 == 0 && pages > 1 {
        ok(split(block));
        for i in 0..pages {
            ok(free(block.cast::<u8>().wrapping_add(i * 4096).cast()));
        }
    } else if run % 2 == 0 {
        ok(put(block));
    } else {
        ok(free(block));
    }
    HANDLER_FREES.fetch_add(1, Ordering::SeqCst);
}

/// The only CPU: the interrupted thread and its handler share one cache.
unsafe extern "C" fn cpu_zero() -> u32 {
    0
}

struct SendPtr(libc::pthread_t);
// SAFETY: a pthread_t is an identifier, usable from any thread.
unsafe impl Send for SendPtr {}

/// Sets its flag when dropped, on a panic as on a normal end.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
#[cfg_attr(miri, ignore = "Miri has no signals")]
fn interrupts_that_allocate_never_deadlock_and_hooks_stay_balanced() {
    const PAGES: u64 = 600;
    const ITERATIONS: u64 = 100_000;
    let memory = TestMemory::new(0x10_0000, PAGES);
    let config = PageConfig {
        phys_offset: memory.phys_offset,
        irq_save: Some(irq_save),
        irq_restore: Some(irq_restore),
        panic: None,
        on_misuse: Some(on_misuse),
        debug: 0,
        // One CPU: the handler often interrupts an operation on its cache.
        cpu_id: Some(cpu_zero),
    };
    // SAFETY: a valid config with hooks that live for the program.
    assert_eq!(unsafe { page_init(&config) }, PageStatus::OK);
    // SAFETY: the leaked test memory, given to the allocator for good.
    let added = unsafe { page_region_add(memory.phys_base, memory.phys_base + PAGES * 4096, 0) };
    assert_eq!(added, PageStatus::OK);
    let mut fresh = PageStats::default();
    // SAFETY: a valid out-pointer.
    assert_eq!(unsafe { page_stats_get(&mut fresh) }, PageStatus::OK);

    // SAFETY: installing a handler made of async-signal-safe calls.
    unsafe {
        let mut action = std::mem::zeroed::<libc::sigaction>();
        action.sa_sigaction = on_signal as *const () as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR1, &action, ptr::null_mut()), 0);
    }

    let stop = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    // SAFETY: plain call.
    let me = SendPtr(unsafe { libc::pthread_self() });
    let started = Instant::now();
    std::thread::scope(|scope| {
        let (stop, sent) = (&stop, &sent);
        // The interrupt source.
        scope.spawn(move || {
            let target = me;
            while !stop.load(Ordering::SeqCst) {
                // SAFETY: the target thread lives until `stop` is set.
                unsafe { libc::pthread_kill(target.0, libc::SIGUSR1) };
                sent.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_micros(20));
            }
        });
        // The watchdog: a deadlock stops all progress.
        scope.spawn(move || {
            let mut last = (PROGRESS.load(Ordering::SeqCst), Instant::now());
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
                let now = PROGRESS.load(Ordering::SeqCst);
                if now != last.0 {
                    last = (now, Instant::now());
                } else if last.1.elapsed() > Duration::from_secs(20) {
                    eprintln!(
                        "no progress for 20 s: deadlock (handler runs {})",
                        HANDLER_RUNS.load(Ordering::SeqCst)
                    );
                    std::process::abort();
                }
            }
        });

        // The interrupted thread. The helpers stop however its body ends:
        // after a failed assertion they would otherwise run on, and the
        // watchdog would abort the process in place of the failure.
        let _stop_helpers = SetOnDrop(stop);
        // SAFETY (both releases): they give up only references this thread
        // holds in `held`, which no handle holds.
        let free = |block: *mut c_void| unsafe { page_free(block) };
        let put = |block: *mut c_void| unsafe { page_put(block) };
        let mut held: Vec<*mut c_void> = Vec::new();
        let mut seed = 0x1234_5678_9ABC_DEF1u64;
        for i in 0..ITERATIONS {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            match seed % 8 {
                0..=3 if held.len() < 48 => {
                    let block = page_alloc_aligned(1 + (seed >> 8) as usize % 4, 1 << ((seed >> 16) % 3), 0);
                    if !block.is_null() {
                        held.push(block);
                    }
                }
                4 if !held.is_empty() => {
                    let block = held[(seed >> 8) as usize % held.len()];
                    assert_eq!(page_get(block), PageStatus::OK);
                    assert_eq!(put(block), PageStatus::OK);
                }
                7 if i % 512 == 0 => assert_eq!(page_check(), PageStatus::OK),
                _ if !held.is_empty() => {
                    let block = held.swap_remove((seed >> 8) as usize % held.len());
                    assert_eq!(free(block), PageStatus::OK);
                }
                _ => {}
            }
            PROGRESS.fetch_add(1, Ordering::SeqCst);
        }
        for block in held {
            assert_eq!(put(block), PageStatus::OK);
        }
    });
    // Let a signal still pending run now, then stop them for good.
    // SAFETY: restoring the default action.
    unsafe { libc::signal(libc::SIGUSR1, libc::SIG_IGN) };
    let elapsed = started.elapsed();

    let mut stats = PageStats::default();
    // SAFETY: a valid out-pointer.
    assert_eq!(unsafe { page_stats_get(&mut stats) }, PageStatus::OK);
    assert_eq!(page_check(), PageStatus::OK);
    let (saves, restores) = (SAVES.load(Ordering::SeqCst), RESTORES.load(Ordering::SeqCst));
    println!(
        "irq reentrance: {ITERATIONS} iterations in {elapsed:.2?}; {} signals sent, {} handled ({} allocs, {} frees, \
         {} ENOMEM); {saves} irq_save / {restores} irq_restore, max depth {}",
        sent.load(Ordering::SeqCst),
        HANDLER_RUNS.load(Ordering::SeqCst),
        HANDLER_ALLOCS.load(Ordering::SeqCst),
        HANDLER_FREES.load(Ordering::SeqCst),
        HANDLER_ENOMEM.load(Ordering::SeqCst),
        MAX_DEPTH.load(Ordering::SeqCst),
    );
    assert_eq!(saves, restores, "every irq_save has its irq_restore");
    assert_eq!(DEPTH.load(Ordering::SeqCst), 0);
    assert_eq!(
        UNBALANCED.load(Ordering::SeqCst),
        0,
        "restores in LIFO order with their own value"
    );
    assert_eq!(
        MAX_DEPTH.load(Ordering::SeqCst),
        1,
        "never nested: the handler cannot run inside the hooks"
    );
    assert_eq!(HANDLER_IN_CRITICAL.load(Ordering::SeqCst), 0);
    assert_eq!(HANDLER_ERRORS.load(Ordering::SeqCst), 0);
    assert_eq!(MISUSE.load(Ordering::SeqCst), 0);
    assert!(HANDLER_ALLOCS.load(Ordering::SeqCst) > 0, "no handler ever allocated");
    assert_eq!(
        HANDLER_ALLOCS.load(Ordering::SeqCst),
        HANDLER_FREES.load(Ordering::SeqCst)
    );
    assert_eq!(stats.used_pages, 0, "{stats:?}");
    assert_eq!(stats.free_pages, fresh.free_pages);
}
