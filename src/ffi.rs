//! The C ABI: `page_*` functions over one global allocator, declared in
//! `include/kpalloc.h` (generated from this file by cbindgen).
//!
//! Every function is safe to call before `page_init` (it answers
//! `PAGE_EUNINIT`, NULL or 0) and never unwinds: the crate aborts on panic.

use core::ffi::{c_char, c_void};
use core::ptr;

use spin::Once;
use x86_64::PhysAddr;

use crate::allocator::LiveBlock;
use crate::allocator::{Allocator, Config, Hooks, PageStats};
use crate::cache::CpuCaches;
use crate::status::PageStatus;
use crate::tag::Tag;
use crate::types::{AllocFlags, DebugFlags, Pool};

/// How the kernel sets kpalloc up; passed to `page_init`. A zeroed
/// `page_config` (or NULL) means: physical = virtual, no hooks.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PageConfig {
    /// Kernel virtual address = physical address + `phys_offset`.
    pub phys_offset: u64,
    /// Masks interrupts and returns the state to restore (e.g. RFLAGS);
    /// called before every lock hold. NULL: interrupts are not masked.
    pub irq_save: Option<unsafe extern "C" fn() -> u64>,
    /// Restores what `irq_save` returned; called after every lock hold.
    pub irq_restore: Option<unsafe extern "C" fn(u64)>,
    /// Stops the kernel with a message; must not return. Called (never
    /// under the lock) for a failed `PAGE_ALLOC_ASSERT` allocation, and
    /// with a fixed message for an internal error (a kpalloc bug), from
    /// wherever it struck. NULL: kpalloc halts the CPU (a kernel) or aborts
    /// (a host).
    pub panic: Option<unsafe extern "C" fn(*const c_char)>,
    /// Told once about every call refused as misuse (every refusal but
    /// `PAGE_ENOMEM`), with its status and the address the caller passed
    /// (NULL where there was none), and about a free page found with its
    /// poison pattern overwritten (`PAGE_ECORRUPT`; the allocation goes
    /// ahead); never under the lock, so it may call kpalloc. NULL: status
    /// only.
    /// Physical addresses are passed as: `page_region_add`, the start as a
    /// pointer (NULL if it does not fit in one); `page_alloc_at`, the
    /// kernel virtual address of `pa`.
    pub on_misuse: Option<unsafe extern "C" fn(PageStatus, *const c_void)>,
    /// `PAGE_DEBUG_*` bits; 0 for none. Unknown bits are `PAGE_EINVAL`.
    pub debug: u32,
    /// Returns the number of the CPU it runs on (e.g. from a per-CPU
    /// variable). Non-NULL turns on per-CPU caches of single pages and of
    /// blocks of 2, 4 and 8 pages aligned to their length: most allocations
    /// and frees of those take no lock, and CPUs do not wait for each other.
    /// Called on each of them, from any context kpalloc is called from. A
    /// stale number (a thread that migrates) is harmless: it only picks a
    /// cache. Numbers from `KPALLOC_MAX_CPUS` up share caches. Such pages
    /// and blocks then come most recently freed first, not lowest address
    /// first. Ignored under `PAGE_DEBUG_POISON` and `PAGE_DEBUG_TRACK`.
    /// NULL: no caches, every call takes the lock.
    pub cpu_id: Option<unsafe extern "C" fn() -> u32>,
}

/// The hooks of a `page_config`, called as the C contract says.
#[derive(Clone, Copy, Debug)]
pub struct CHooks {
    config: PageConfig,
}

// SAFETY (for each call below): `page_init`'s contract is that every non-NULL
// hook is a function with this signature that stays callable for the rest of
// the program and may be called from any context kpalloc is called from.
impl Hooks for CHooks {
    fn irq_save(&self) -> u64 {
        // SAFETY: see the impl.
        self.config.irq_save.map_or(0, |save| unsafe { save() })
    }

    fn irq_restore(&self, saved: u64) {
        if let Some(restore) = self.config.irq_restore {
            // SAFETY: see the impl.
            unsafe { restore(saved) }
        }
    }

    fn panic(&self, message: &core::ffi::CStr) -> ! {
        if let Some(panic) = self.config.panic {
            // SAFETY: see the impl; `message` is NUL-terminated and lives
            // through the call.
            unsafe { panic(message.as_ptr()) }
        }
        crate::raw::halt()
    }

    fn on_misuse(&self, status: PageStatus, addr: usize) {
        if let Some(report) = self.config.on_misuse {
            // SAFETY: see the impl.
            unsafe { report(status, ptr::without_provenance(addr)) }
        }
    }

    #[inline]
    fn cpu_id(&self) -> usize {
        // SAFETY: see the impl.
        self.config.cpu_id.map_or(0, |cpu_id| unsafe { cpu_id() } as usize)
    }
}

/// The global allocator's per-CPU caches (used if `page_config.cpu_id` is
/// set): a static, so they cost no stack in `page_init`.
static CACHES: CpuCaches = CpuCaches::new();

static GLOBAL: Once<Allocator<CHooks>> = Once::new();

/// The allocator behind the C ABI, once `page_init` has made it.
///
/// # Safety
/// Through it, release (`free`, `free_sized`, `put`, `split`) only blocks
/// whose references you hold yourself, never one a [`crate::Page`],
/// [`crate::ContigPages`] or [`crate::Frames`] holds: those hand out the
/// block's memory, or promise a frame to no one else, for as long as they
/// hold it. (Misuse kpalloc can see, such as a double free, is refused
/// either way; a reference taken from another holder is not visible.)
pub unsafe fn global() -> Option<&'static Allocator<CHooks>> {
    installed()
}

/// [`global`] for this crate, whose own releases keep its contract.
pub(crate) fn installed() -> Option<&'static Allocator<CHooks>> {
    GLOBAL.get()
}

/// Sets kpalloc up; call once, before anything else.
///
/// `cfg` is borrowed for the call (NULL: all defaults); its hooks must stay
/// valid for the rest of the program.
///
/// Returns `PAGE_OK`; `PAGE_EBUSY` if already initialised; `PAGE_EINVAL`
/// for unknown `debug` bits. Not from interrupt context.
///
/// # Safety
/// `cfg` is NULL or points to a valid `page_config`; each non-NULL hook is a
/// function of that signature, callable from every context kpalloc is used in.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn page_init(cfg: *const PageConfig) -> PageStatus {
    if let Some(allocator) = installed() {
        // Already made: the installed hooks hear of it.
        return allocator.report::<()>(PageStatus::EBUSY, cfg.addr()).into();
    }
    // SAFETY: the caller passes NULL or a valid config.
    let config = unsafe { cfg.as_ref() }.copied().unwrap_or_default();
    let hooks = CHooks { config };
    let Some(debug) = DebugFlags::from_bits(config.debug) else {
        hooks.on_misuse(PageStatus::EINVAL, cfg.addr());
        return PageStatus::EINVAL;
    };
    let mut made = false;
    let allocator = GLOBAL.call_once(|| {
        made = true;
        let config = Config {
            phys_offset: config.phys_offset,
            debug,
        };
        match hooks.config.cpu_id {
            Some(_) => Allocator::with_cpu_caches(config, hooks, &CACHES),
            None => Allocator::new(config, hooks),
        }
    });
    if made {
        PageStatus::OK
    } else {
        // Another CPU's page_init won the race.
        allocator.report::<()>(PageStatus::EBUSY, cfg.addr()).into()
    }
}

/// Adds the physical range `[pa_start, pa_end)` to `pool`
/// (`PAGE_POOL_KERNEL` or `PAGE_POOL_USER`), rounded inward to pages.
///
/// The region's metadata (about 4.13 bytes per page, plus a header and 8
/// bytes per region) is written into its own first pages; no other page of
/// it is read or written until allocated, so it may be memory that is not
/// mapped yet. Regions may be added at any time, in any order.
///
/// Returns `PAGE_OK`; `PAGE_EINVAL` for an empty or reversed range, a
/// start or end at or above 2^52 (the end too, though it is exclusive), a
/// range whose kernel virtual addresses wrap around or do not fit in a
/// pointer (on a 32-bit kernel, memory beyond its direct map), or an
/// unknown pool; `PAGE_EOVERLAP` if it shares a page with a region added
/// before; `PAGE_ETOOSMALL` if it cannot hold its metadata plus one page;
/// `PAGE_EUNINIT`. On error nothing changes. Not from interrupt context (it
/// writes the metadata under the lock).
///
/// # Safety
/// The range, at kernel virtual address `pa + phys_offset`, must be memory
/// that is valid for reads and writes (at least its metadata pages, at once;
/// the others before they are allocated) and belongs to kpalloc from now on.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn page_region_add(pa_start: u64, pa_end: u64, pool: u32) -> PageStatus {
    let Some(allocator) = installed() else {
        return PageStatus::EUNINIT;
    };
    let addr = crate::allocator::region_report_addr(pa_start);
    let (Some(pool), Ok(start), Ok(end)) = (
        Pool::from_u32(pool),
        PhysAddr::try_new(pa_start),
        PhysAddr::try_new(pa_end),
    ) else {
        return allocator.report::<()>(PageStatus::EINVAL, addr).into();
    };
    // SAFETY: the caller vouches for the range as this function requires.
    unsafe { allocator.add_region(start, end, pool) }.into()
}

/// Allocates `count` physically contiguous pages; see `page_alloc_aligned`.
#[unsafe(no_mangle)]
pub extern "C" fn page_alloc(count: usize, flags: u32) -> *mut c_void {
    match (count, flags) {
        (1, 0) => alloc_page(),
        _ => alloc_any(count, 1, flags),
    }
}

/// `page_alloc(count, flags)` recording `tag` as the block's allocation
/// site under `PAGE_DEBUG_TRACK` (ignored otherwise), for leak reports by
/// `page_for_each_live` (its first 4096 bytes are kept).
/// `PAGE_ALLOC_HERE(count, flags)` passes "file:line". Same returns as
/// `page_alloc_aligned`.
///
/// # Safety
/// `tag` is NULL or a NUL-terminated string that stays valid and unchanged
/// for the rest of the program (a string literal).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn page_alloc_tagged(count: usize, flags: u32, tag: *const c_char) -> *mut c_void {
    let Some(allocator) = installed() else {
        return ptr::null_mut();
    };
    let tag = if allocator.tracking() {
        // SAFETY: the caller passes a static string or NULL.
        unsafe { Tag::from_c(tag) }
    } else {
        Tag::NONE
    };
    alloc_for_c(allocator, count, 1, flags, tag)
}

fn alloc_for_c(allocator: &Allocator<CHooks>, count: usize, align_pages: usize, flags: u32, tag: Tag) -> *mut c_void {
    let result = match AllocFlags::from_bits(flags) {
        Some(flags) => allocator.alloc_tagged(count, align_pages, flags, tag),
        None => allocator.refuse_flags(count, flags, 0),
    };
    block_pointer(allocator, result)
}

/// The kernel virtual address of an allocated block, or NULL.
fn block_pointer(allocator: &Allocator<CHooks>, result: Result<PhysAddr, PageStatus>) -> *mut c_void {
    result.map_or(ptr::null_mut(), |pa| block_address(allocator, pa))
}

/// The kernel virtual address of the block at `pa`, as C receives it.
#[inline]
fn block_address(allocator: &Allocator<CHooks>, pa: PhysAddr) -> *mut c_void {
    ptr::with_exposed_provenance_mut(allocator.kva(pa))
}

/// Allocates `count` physically contiguous pages whose first physical page
/// number is a multiple of `align_pages` (a power of two): the lowest such
/// block of the pool's regions in address order.
///
/// `flags`: `PAGE_ALLOC_ZERO` zero-fills (outside the lock),
/// `PAGE_ALLOC_USER` takes from the user pool, `PAGE_ALLOC_DMA32` keeps the
/// block below 4 GiB physical, `PAGE_ALLOC_ASSERT` calls the panic hook on
/// failure instead of returning NULL.
///
/// Returns the block's kernel virtual address, owned by the caller with one
/// reference (release it with `page_free` or `page_put`). NULL when memory
/// runs out (counted in `failed_allocs`), for a zero count, an alignment
/// that is zero or not a power of two, or unknown flags (reported as
/// `PAGE_EINVAL`), and before `page_init`. Interrupt-safe given the irq hooks.
#[unsafe(no_mangle)]
pub extern "C" fn page_alloc_aligned(count: usize, align_pages: usize, flags: u32) -> *mut c_void {
    match (count, align_pages, flags) {
        (1, 1, 0) => alloc_page(),
        _ => alloc_any(count, align_pages, flags),
    }
}

/// One page without flags, the commonest call: straight from this CPU's
/// cache, without the frame of `alloc_for_c`, which every request and
/// outcome shares (`scripts/ab.sh` on 2026-12-07: pairs 10.9 against 13.0
/// ns; without caches 30.3 against 29.5, the price of the test). What the
/// cache cannot serve comes from the bitmaps.
#[inline(always)]
fn alloc_page() -> *mut c_void {
    if let Some(allocator) = installed() {
        if let Some(pa) = allocator.take_cached(Pool::Kernel) {
            return block_address(allocator, pa);
        }
    }
    alloc_page_searching()
}

/// One page without flags from the bitmaps, the cache tried already. Out
/// of line, without arguments: the fast path keeps nothing across the
/// `cpu_id` hook for it.
#[inline(never)]
fn alloc_page_searching() -> *mut c_void {
    let Some(allocator) = installed() else {
        return ptr::null_mut();
    };
    block_pointer(allocator, allocator.alloc_page_searching())
}

/// `page_alloc_aligned` by the general path. Out of line: the cached path
/// jumps to it, and saves no registers for it.
#[inline(never)]
fn alloc_any(count: usize, align_pages: usize, flags: u32) -> *mut c_void {
    let Some(allocator) = installed() else {
        return ptr::null_mut();
    };
    alloc_for_c(allocator, count, align_pages, flags, Tag::NONE)
}

/// Allocates exactly the `count` pages from physical address `pa` (e.g. to
/// reserve firmware or kernel-image pages inside a region). `flags` as for
/// `page_alloc_aligned`; `PAGE_ALLOC_USER` and `PAGE_ALLOC_DMA32` must match
/// where the range is.
///
/// Returns `PAGE_OK` (the caller owns the block, one reference);
/// `PAGE_EBUSY` if any page of it is in use; `PAGE_ENOTMANAGED` if it is not
/// all usable pages of one region; `PAGE_EINVAL` for an unaligned `pa`, a
/// count of zero or above `PAGE_REFCOUNT_MAX` (the longest block), unknown
/// flags or a pool/DMA32 mismatch; `PAGE_EUNINIT`. Not failed by
/// `page_fail_after`/`page_fail_every`. Interrupt-safe given the irq hooks.
#[unsafe(no_mangle)]
pub extern "C" fn page_alloc_at(pa: u64, count: usize, flags: u32) -> PageStatus {
    let Some(allocator) = installed() else {
        return PageStatus::EUNINIT;
    };
    let addr = pa.wrapping_add(allocator.config().phys_offset) as usize;
    match (AllocFlags::from_bits(flags), PhysAddr::try_new(pa)) {
        (Some(flags), Ok(pa)) => allocator.alloc_at_tagged(pa, count, flags, Tag::NONE),
        (Some(_), Err(_)) => allocator.report(PageStatus::ENOTMANAGED, addr),
        (None, _) => allocator.refuse_flags(count, flags, addr),
    }
    .into()
}

/// Runs `op` on the block named by the kernel virtual address `block`.
fn on_block(
    block: *const c_void,
    op: impl FnOnce(&Allocator<CHooks>, PhysAddr) -> Result<(), PageStatus>,
) -> PageStatus {
    let Some(allocator) = installed() else {
        return PageStatus::EUNINIT;
    };
    match allocator.pa(block.addr()) {
        Some(pa) => op(allocator, pa).into(),
        None => allocator.report::<()>(PageStatus::ENOTMANAGED, block.addr()).into(),
    }
}

/// Frees the block headed at `block`, which the caller owns alone; the
/// allocator knows its length.
///
/// Returns `PAGE_OK`; `PAGE_ESHARED` if it has more than one reference (use
/// `page_put`); `PAGE_ENOTALLOCATED` if it is free (double free);
/// `PAGE_ENOTHEAD` for an interior page of a block; `PAGE_ENOTMANAGED` for
/// NULL, an unaligned address, a metadata page or one outside every region;
/// `PAGE_EUNINIT`. On error nothing changes. Interrupt-safe given the irq hooks.
///
/// # Safety
/// The caller holds the reference it gives up (with `page_init`'s
/// allocator also driven from Rust: not one a `Page`, `ContigPages` or
/// `Frames` holds). Misuse kpalloc can see is refused as documented.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn page_free(block: *mut c_void) -> PageStatus {
    on_block(block, |allocator, pa| allocator.free(pa))
}

/// `page_free` for callers that know the block's length (as Pintos'
/// `palloc_free_multiple` does): `PAGE_EINVAL`, and nothing freed, if the
/// block headed at `block` is not `pages` pages long. Other returns as
/// `page_free`. Interrupt-safe given the irq hooks.
///
/// # Safety
/// As `page_free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn page_free_sized(block: *mut c_void, pages: usize) -> PageStatus {
    on_block(block, |allocator, pa| allocator.free_sized(pa, pages))
}

/// Adds a reference to the block headed at `page` (lock-free).
///
/// Returns `PAGE_OK`; `PAGE_EOVERFLOW` at `PAGE_REFCOUNT_MAX`;
/// `PAGE_ENOTALLOCATED` for a free page (never brought back to life);
/// `PAGE_ENOTHEAD`, `PAGE_ENOTMANAGED`, `PAGE_EUNINIT` as for `page_free`.
/// Safe from interrupt handlers.
#[unsafe(no_mangle)]
pub extern "C" fn page_get(page: *mut c_void) -> PageStatus {
    on_block(page, |allocator, pa| allocator.get(pa))
}

/// Drops a reference to the block headed at `page`, freeing the block with
/// the last one (lock-free unless it is the last).
///
/// Returns `PAGE_OK`, or the errors of `page_free` except `PAGE_ESHARED`.
/// Safe from interrupt handlers given the irq hooks.
///
/// # Safety
/// As `page_free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn page_put(page: *mut c_void) -> PageStatus {
    on_block(page, |allocator, pa| allocator.put(pa))
}

/// Turns the block headed at `block`, owned alone, into independent
/// single-page blocks with one reference each (the rule for multi-page
/// blocks: one reference count, at the head, until split).
///
/// Returns `PAGE_OK`; `PAGE_ESHARED` if it has more than one reference;
/// the other errors of `page_free`. Interrupt-safe given the irq hooks.
///
/// # Safety
/// As `page_free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn page_split(block: *mut c_void) -> PageStatus {
    on_block(block, |allocator, pa| allocator.split(pa))
}

/// The reference count of the block headed at `page`: 0 for a free,
/// interior or unmanaged page, and before `page_init`. Lock-free.
#[unsafe(no_mangle)]
pub extern "C" fn page_refcount(page: *const c_void) -> u32 {
    installed()
        .and_then(|a| Some(a.refcount(a.pa(page.addr())?)))
        .unwrap_or(0)
}

/// The length in pages of the block headed at `page`: 0 for a free,
/// interior or unmanaged page, and before `page_init`. Lock-free.
#[unsafe(no_mangle)]
pub extern "C" fn page_block_pages(page: *const c_void) -> usize {
    installed()
        .and_then(|a| Some(a.block_pages(a.pa(page.addr())?)))
        .unwrap_or(0)
}

/// The physical address of kernel virtual address `kva` (`kva -
/// phys_offset`); 0 if it has none, and before `page_init`.
#[unsafe(no_mangle)]
pub extern "C" fn page_to_pa(kva: *const c_void) -> u64 {
    installed().and_then(|a| a.pa(kva.addr())).map_or(0, PhysAddr::as_u64)
}

/// The kernel virtual address of physical address `pa` (`pa +
/// phys_offset`); NULL before `page_init`, or if `pa` has none (the sum
/// wraps around, or does not fit in a pointer: on a 32-bit kernel, memory
/// beyond its direct map).
#[unsafe(no_mangle)]
pub extern "C" fn page_from_pa(pa: u64) -> *mut c_void {
    installed()
        .and_then(|allocator| pa.checked_add(allocator.config().phys_offset))
        .and_then(|kva| usize::try_from(kva).ok())
        .map_or(ptr::null_mut(), ptr::with_exposed_provenance_mut)
}

/// Writes a snapshot of the counters to `*out`, taken under the lock:
/// `free_pages + used_pages + metadata_pages = total_pages` holds in it.
/// A page that other CPUs' caches hand out and take back during the call
/// may be counted as cached twice: `used_pages` is then low by that many,
/// never below zero.
///
/// Returns `PAGE_OK`; `PAGE_EINVAL` for NULL; `PAGE_EUNINIT`.
/// Interrupt-safe given the irq hooks; walks every region's bitmap for
/// `largest_free_run`, so not for hot paths.
///
/// # Safety
/// `out` is NULL or valid for writing a `page_stats`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn page_stats_get(out: *mut PageStats) -> PageStatus {
    let Some(allocator) = installed() else {
        return PageStatus::EUNINIT;
    };
    if out.is_null() {
        return allocator.report::<()>(PageStatus::EINVAL, 0).into();
    }
    let stats = allocator.stats();
    // SAFETY: `out` is non-NULL and, by the contract, valid for writes.
    unsafe { out.write(stats) };
    PageStatus::OK
}

/// Lets the next `successes` allocations (`page_alloc`,
/// `page_alloc_tagged`, `page_alloc_aligned`; not `page_alloc_at`)
/// succeed, then fails every later one as if memory had run out, until
/// `page_fail_off`: for testing a kernel's out-of-memory paths. It joins a
/// `page_fail_every` rule in force: an allocation fails if either rule says
/// so, and `successes` counts attempts, failed ones included. Returns
/// `PAGE_OK`; `PAGE_EUNINIT`. Any context.
#[unsafe(no_mangle)]
pub extern "C" fn page_fail_after(successes: u64) -> PageStatus {
    installed().map_or(PageStatus::EUNINIT, |allocator| {
        allocator.fail_after(successes);
        PageStatus::OK
    })
}

/// Fails every `n`-th allocation (those `page_fail_after` counts) from now
/// on as if memory had run out, until `page_fail_off`; it joins a
/// `page_fail_after` rule in force. Returns `PAGE_OK`; `PAGE_EINVAL` for
/// 0; `PAGE_EUNINIT`. Any context.
#[unsafe(no_mangle)]
pub extern "C" fn page_fail_every(n: u64) -> PageStatus {
    installed().map_or(PageStatus::EUNINIT, |allocator| allocator.fail_every(n).into())
}

/// Stops the failures scheduled by `page_fail_after` / `page_fail_every`.
/// Returns `PAGE_OK`; `PAGE_EUNINIT`. Any context.
#[unsafe(no_mangle)]
pub extern "C" fn page_fail_off() -> PageStatus {
    installed().map_or(PageStatus::EUNINIT, |allocator| {
        allocator.fail_off();
        PageStatus::OK
    })
}

/// An allocated block, as `page_for_each_live` shows it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PageLiveBlock {
    /// Kernel virtual address of the head page.
    pub addr: *mut c_void,
    /// Physical address of the head page.
    pub pa: u64,
    /// Length in pages.
    pub pages: usize,
    /// Reference count.
    pub refcount: u32,
    /// Line of a Rust allocation site; 0 for C tags (which carry it).
    pub line: u32,
    /// Allocation site under `PAGE_DEBUG_TRACK`: the C tag or the Rust
    /// file name, `tag_len` bytes, not necessarily NUL-terminated; NULL if
    /// none was recorded.
    pub tag: *const c_char,
    /// Length of `tag` in bytes.
    pub tag_len: usize,
}

/// Calls `visit(ctx, block)` for every allocated block in address order
/// (`block` is valid during the call only), e.g. to print a leak report
/// with allocation sites. The lock is not held during `visit`, which may
/// call kpalloc. Returns `PAGE_OK`; `PAGE_EINVAL` for a NULL `visit`;
/// `PAGE_EUNINIT`. Not from interrupt context (it walks every page).
///
/// # Safety
/// `visit` is a function of this signature; `ctx` is passed to it as is.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn page_for_each_live(
    visit: Option<unsafe extern "C" fn(*mut c_void, *const PageLiveBlock)>,
    ctx: *mut c_void,
) -> PageStatus {
    let Some(allocator) = installed() else {
        return PageStatus::EUNINIT;
    };
    let Some(visit) = visit else {
        return allocator.report::<()>(PageStatus::EINVAL, 0).into();
    };
    allocator.for_each_live(|block: &LiveBlock| {
        let block = PageLiveBlock {
            addr: block_address(allocator, block.pa),
            pa: block.pa.as_u64(),
            pages: block.pages,
            refcount: block.refcount,
            line: block.tag.line(),
            tag: if block.tag.text_len() == 0 {
                ptr::null()
            } else {
                block.tag.text_ptr()
            },
            tag_len: block.tag.text_len(),
        };
        // SAFETY: the caller's contract; `block` lives through the call.
        unsafe { visit(ctx, &block) }
    });
    PageStatus::OK
}

/// Writes the state of every page as text into `buf` (`len` bytes,
/// always NUL-terminated when `len` > 0, cut to fit) and returns the length
/// the whole dump needs without the NUL: call with `len` 0 to size the
/// buffer. 0 before `page_init`. Format, line by line:
///
/// ```text
/// kpalloc-dump 1
/// stats total=N free=N used=N metadata=N regions=N largest_free_run=N
/// region start=0xPA end=0xPA pool=kernel|user
/// runs M3 F120 U4 S1 F2000 ...     (16 runs a line, repeated)
/// end
/// ```
///
/// Each run is a state letter and a page count, in address order from the
/// region's start: M metadata, F free, U allocated (one reference), S
/// shared (more than one). `kpalloc-map` turns a dump into a picture.
/// Holds the lock for a walk of each region: not for hot paths.
///
/// # Safety
/// `buf` is valid for writing `len` bytes (or `len` is 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn page_dump(buf: *mut c_char, len: usize) -> usize {
    let buffer: &mut [u8] = if buf.is_null() || len == 0 {
        &mut []
    } else {
        // SAFETY: the caller passes `len` writable bytes.
        unsafe { core::slice::from_raw_parts_mut(buf.cast(), len) }
    };
    let Some(allocator) = installed() else {
        // An empty dump, still NUL-terminated as promised.
        if let Some(first) = buffer.first_mut() {
            *first = 0;
        }
        return 0;
    };
    allocator.dump(buffer)
}

/// Gives the pages of every per-CPU cache back to the bitmaps, except
/// caches in use at that moment (by another CPU, or by a call this one
/// interrupted); returns how many pages. For exact free-space figures
/// (`largest_free_run`, `page_dump`) or before taking a CPU offline; an
/// allocation that finds no room does it by itself before failing. 0
/// without caches and before `page_init`. Interrupt-safe given the irq
/// hooks.
#[unsafe(no_mangle)]
pub extern "C" fn page_drain_caches() -> usize {
    installed().map_or(0, |allocator| allocator.drain_caches())
}

/// Verifies all of kpalloc's metadata: bitmaps, summaries, reference
/// counts, block boundaries and counters; under `PAGE_DEBUG_POISON`, also
/// that every free page still holds the poison pattern (a write after free
/// shows before the page is allocated again).
///
/// Returns `PAGE_OK`; `PAGE_ECORRUPT` (also reported through `on_misuse`
/// with the first bad page, or NULL where only the totals or the order of
/// the regions disagree) on any disagreement; `PAGE_EUNINIT`; with
/// per-CPU caches, `PAGE_EBUSY` (not misuse) if a CPU's cache stayed in use
/// throughout (as when the check interrupted a page call on its own CPU):
/// try again.
/// Holds the lock for a walk of every page: for tests and debugging.
#[unsafe(no_mangle)]
pub extern "C" fn page_check() -> PageStatus {
    installed().map_or(PageStatus::EUNINIT, |allocator| allocator.check().into())
}

/// The name of status `status` (e.g. "PAGE_ENOMEM"), or "PAGE_UNKNOWN";
/// a static string. Any context.
#[unsafe(no_mangle)]
pub extern "C" fn page_status_str(status: u32) -> *const c_char {
    PageStatus::from_u32(status)
        .map_or(c"PAGE_UNKNOWN", PageStatus::name)
        .as_ptr()
}
