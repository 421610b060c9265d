//! The benchmark scenarios, shared by the criterion benches (`pairs.rs`) and
//! the table/plot runner (`table.rs`): the allocators under test behind one
//! trait, the memory they manage, the states each scenario starts from, and
//! the operations that are timed.
//!
//! Every allocator manages the same pages in the same state. Memory is one
//! huge `MAP_NORESERVE` anonymous mapping carved from the top down, so only
//! pages that are written (kpalloc's metadata at a region's front, a zeroed
//! page) are ever backed, and each new region has a lower physical address
//! than all earlier ones: the C ABI's single global allocator (regions are
//! searched in address order) always finds the current scenario's region
//! first.
//!
//! Every allocator sits behind a spin lock, as a kernel would use it
//! (kpalloc and the KeOS model have their own; the peers get `spin::Mutex`).
#![allow(dead_code)]

use std::ffi::c_void;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Barrier, OnceLock};
use std::time::{Duration, Instant};

use bitmap_allocator::BitAlloc;
use kpalloc::types::{PAGE_ALLOC_ZERO, PAGE_POOL_KERNEL};
use kpalloc::{AllocFlags, Allocator, Config, DebugFlags, NoHooks, PageConfig, PageStatus, Pool};
use x86_64::PhysAddr;

pub const PAGE: usize = 4096;
/// 1 GiB of 4 KiB pages: the default memory size.
pub const GIB_PAGES: usize = 1 << 18;

// ---------------------------------------------------------------- memory

/// Physical address of the arena's first byte: 4 TiB (far from DMA32, well
/// below 2^52), or the arena's virtual address if that is lower, so that
/// kernel virtual = physical + offset never wraps (kpalloc refuses that).
const PHYS_BASE: u64 = 4 << 40;
const GIB: usize = 1 << 30;
/// Virtual size of the arena: room for every region one process carves
/// (2 TiB, untouched but for metadata); `KPALLOC_BENCH_ARENA_GIB` makes it
/// smaller, for valgrind, whose address space is smaller.
fn arena_bytes() -> usize {
    let gib = std::env::var("KPALLOC_BENCH_ARENA_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2048usize);
    gib << 30
}
/// Regions are carved in multiples of this (2 MiB), so each one's first
/// frame number is 512-aligned.
const CARVE_ALIGN: usize = 2 << 20;

pub struct Arena {
    /// Virtual address of the arena's first byte (1 GiB aligned).
    virt: usize,
    phys: u64,
    /// Bytes of the arena not carved yet (the carved part is above).
    top: AtomicUsize,
}

/// The process's arena, made on first use.
pub fn arena() -> &'static Arena {
    static ARENA: OnceLock<Arena> = OnceLock::new();
    ARENA.get_or_init(|| {
        let bytes = arena_bytes();
        // SAFETY: a fresh private anonymous mapping; nothing else uses it.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes + GIB,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap of the benchmark arena");
        let virt = (p as usize).next_multiple_of(GIB);
        Arena {
            virt,
            phys: PHYS_BASE.min(virt as u64),
            top: AtomicUsize::new(bytes),
        }
    })
}

impl Arena {
    /// Kernel virtual = physical + this.
    pub fn phys_offset(&self) -> u64 {
        self.virt as u64 - self.phys
    }

    /// A fresh range of `pages` pages below every earlier one: its first
    /// physical address.
    pub fn carve(&self, pages: usize) -> u64 {
        let bytes = (pages * PAGE).next_multiple_of(CARVE_ALIGN);
        let old = self
            .top
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |top| top.checked_sub(bytes))
            .expect("benchmark arena exhausted");
        self.phys + (old - bytes) as u64
    }

    pub fn kva(&self, pa: u64) -> usize {
        (pa.wrapping_add(self.phys_offset())) as usize
    }
}

// ---------------------------------------------------------------- states

/// The state a scenario starts from: `pages` pages from physical `pa`, of
/// which exactly `free` are free. Pages `[0, front)` are always used (they
/// hold kpalloc's metadata; the peers keep theirs on the heap, so for them
/// these pages are simply not free).
pub struct Setup {
    pub pa: u64,
    pub pages: usize,
    pub front: usize,
    pub free: Vec<Range<usize>>,
}

/// Pages kpalloc's metadata may take at the front of a region of `pages`
/// pages (about 4.13 bytes per page plus a header), rounded up generously.
pub fn front_pages(pages: usize) -> usize {
    (pages * 5).div_ceil(PAGE) + 2
}

/// A small deterministic generator (xorshift64*), so every allocator gets
/// exactly the same pattern.
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

impl Setup {
    fn carved(pages: usize) -> (u64, usize) {
        (arena().carve(pages), front_pages(pages))
    }

    /// Everything free (but the front).
    pub fn empty(pages: usize) -> Setup {
        let (pa, front) = Self::carved(pages);
        Setup {
            pa,
            pages,
            front,
            free: std::iter::once(front..pages).collect(),
        }
    }

    /// `used_percent` of the pages used, chosen at random.
    pub fn random(pages: usize, used_percent: usize, seed: u64) -> Setup {
        let (pa, front) = Self::carved(pages);
        let mut rng = Rng::new(seed);
        let mut free: Vec<Range<usize>> = Vec::new();
        for page in front..pages {
            if rng.below(100) >= used_percent {
                match free.last_mut() {
                    Some(last) if last.end == page => last.end += 1,
                    _ => free.push(page..page + 1),
                }
            }
        }
        Setup { pa, pages, front, free }
    }

    /// `used_percent` of the pages used, all of them below the free ones.
    pub fn free_at_end(pages: usize, used_percent: usize) -> Setup {
        let (pa, front) = Self::carved(pages);
        let first_free = (pages * used_percent / 100).max(front);
        Setup {
            pa,
            pages,
            front,
            free: std::iter::once(first_free..pages).collect(),
        }
    }

    /// The used runs (complement of `free`), `[0, front)` included.
    pub fn used(&self) -> Vec<Range<usize>> {
        let mut used = Vec::new();
        let mut at = 0;
        for range in &self.free {
            if range.start > at {
                used.push(at..range.start);
            }
            at = range.end;
        }
        if at < self.pages {
            used.push(at..self.pages);
        }
        used
    }

    pub fn free_pages(&self) -> usize {
        self.free.iter().map(|r| r.len()).sum()
    }

    pub fn pfn(&self) -> usize {
        (self.pa / PAGE as u64) as usize
    }
}

// ---------------------------------------------------------------- subjects

/// An allocator under test, in the state of a [`Setup`].
pub trait Subject: Sync + Sized {
    /// What an allocation returns and a free takes.
    type H: Copy + Send;
    const NAME: &'static str;
    fn build(setup: &Setup) -> Self;
    fn alloc(&self, count: usize, align: usize) -> Option<Self::H>;
    fn free(&self, h: Self::H, count: usize);
    /// The page's address, to write to it.
    fn kva(&self, h: Self::H) -> *mut u8;
    /// An allocation with the allocator's own zero-fill, if it has one.
    fn alloc_zeroed(&self) -> Option<Self::H> {
        None
    }
}

/// A kva that may cross threads.
#[derive(Clone, Copy)]
pub struct Kva(pub *mut c_void);
// SAFETY: it names a page; the page's owner is whoever holds the handle.
unsafe impl Send for Kva {}

/// kpalloc through its C ABI (the `extern "C"` functions, over the global).
///
/// The global outlives every scenario, so a finished scenario's region is
/// filled up when it is dropped: then only the current scenario's region
/// (the lowest, so the first searched) has free pages, and a fill or a
/// failed allocation never strays into an older region.
pub struct KpallocC;

impl Drop for KpallocC {
    fn drop(&mut self) {
        // Every older region is full, so NULL means this one is too. Big
        // blocks first, down to single pages.
        let mut count = 1 << 20;
        while count > 0 {
            while !kpalloc::ffi::page_alloc(count, 0).is_null() {}
            count /= 2;
        }
    }
}

fn ffi_init() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let config = PageConfig {
            phys_offset: arena().phys_offset(),
            cpu_id: Some(current_cpu),
            ..PageConfig::default()
        };
        // SAFETY: a valid config whose one hook lives for the program.
        assert_eq!(unsafe { kpalloc::ffi::page_init(&config) }, PageStatus::OK);
    });
}

fn ffi_metadata_pages() -> u64 {
    let mut stats = kpalloc::PageStats::default();
    // SAFETY: a valid out-pointer.
    assert_eq!(unsafe { kpalloc::ffi::page_stats_get(&mut stats) }, PageStatus::OK);
    stats.metadata_pages
}

impl Subject for KpallocC {
    type H = Kva;
    const NAME: &'static str = "kpalloc C ABI";
    fn build(setup: &Setup) -> Self {
        ffi_init();
        let before = ffi_metadata_pages();
        let end = setup.pa + (setup.pages * PAGE) as u64;
        // SAFETY: a range of the arena carved for this setup alone.
        let status = unsafe { kpalloc::ffi::page_region_add(setup.pa, end, PAGE_POOL_KERNEL) };
        assert_eq!(
            status,
            PageStatus::OK,
            "page_region_add({:#x}, {end:#x}), offset {:#x}",
            setup.pa,
            arena().phys_offset()
        );
        let meta = (ffi_metadata_pages() - before) as usize;
        assert!(meta <= setup.front, "metadata {meta} > front {}", setup.front);
        for range in setup.used() {
            let start = range.start.max(meta);
            if start < range.end {
                let pa = setup.pa + (start * PAGE) as u64;
                assert_eq!(kpalloc::ffi::page_alloc_at(pa, range.end - start, 0), PageStatus::OK);
            }
        }
        KpallocC
    }
    #[inline]
    fn alloc(&self, count: usize, align: usize) -> Option<Kva> {
        let p = kpalloc::ffi::page_alloc_aligned(count, align, 0);
        (!p.is_null()).then_some(Kva(p))
    }
    #[inline]
    fn free(&self, h: Kva, _count: usize) {
        // SAFETY: `h` is a block this bench allocated and gives up here.
        let status = unsafe { kpalloc::ffi::page_free(h.0) };
        debug_assert_eq!(status, PageStatus::OK);
        std::hint::black_box(status);
    }
    fn kva(&self, h: Kva) -> *mut u8 {
        h.0.cast()
    }
    #[inline]
    fn alloc_zeroed(&self) -> Option<Kva> {
        let p = kpalloc::ffi::page_alloc(1, PAGE_ALLOC_ZERO);
        (!p.is_null()).then_some(Kva(p))
    }
}

/// kpalloc through its Rust API (an `Allocator` instance).
pub struct KpallocRust(Allocator<NoHooks>);

impl Subject for KpallocRust {
    type H = PhysAddr;
    const NAME: &'static str = "kpalloc Rust";
    fn build(setup: &Setup) -> Self {
        let allocator = Allocator::new(
            Config {
                phys_offset: arena().phys_offset(),
                debug: DebugFlags::NONE,
            },
            NoHooks,
        );
        let end = setup.pa + (setup.pages * PAGE) as u64;
        // SAFETY: a range of the arena carved for this setup alone.
        unsafe { allocator.add_region(PhysAddr::new(setup.pa), PhysAddr::new(end), Pool::Kernel) }.unwrap();
        let meta = allocator.stats().metadata_pages as usize;
        assert!(meta <= setup.front, "metadata {meta} > front {}", setup.front);
        for range in setup.used() {
            let start = range.start.max(meta);
            if start < range.end {
                let pa = PhysAddr::new(setup.pa + (start * PAGE) as u64);
                allocator.alloc_at(pa, range.end - start, AllocFlags::NONE).unwrap();
            }
        }
        KpallocRust(allocator)
    }
    #[inline]
    fn alloc(&self, count: usize, align: usize) -> Option<PhysAddr> {
        self.0.alloc(count, align, AllocFlags::NONE).ok()
    }
    #[inline]
    fn free(&self, h: PhysAddr, _count: usize) {
        let result = self.0.free(h);
        debug_assert!(result.is_ok());
        std::hint::black_box(result.is_ok());
    }
    fn kva(&self, h: PhysAddr) -> *mut u8 {
        self.0.kva(h) as *mut u8
    }
    #[inline]
    fn alloc_zeroed(&self) -> Option<PhysAddr> {
        self.0.alloc(1, 1, AllocFlags::ZERO).ok()
    }
}

/// `buddy_system_allocator`'s `FrameAllocator` (frame numbers are physical
/// frame numbers, so its natural alignment is physical).
pub struct Buddy {
    inner: spin::Mutex<buddy_system_allocator::FrameAllocator<33>>,
    pfn: usize,
}

impl Subject for Buddy {
    type H = usize;
    const NAME: &'static str = "buddy_system_allocator";
    fn build(setup: &Setup) -> Self {
        let mut frames = buddy_system_allocator::FrameAllocator::<33>::new();
        let base = setup.pfn();
        for range in &setup.free {
            frames.add_frame(base + range.start, base + range.end);
        }
        Buddy {
            inner: spin::Mutex::new(frames),
            pfn: base,
        }
    }
    #[inline]
    fn alloc(&self, count: usize, align: usize) -> Option<usize> {
        let mut frames = self.inner.lock();
        if align <= 1 {
            frames.alloc(count)
        } else {
            frames.alloc_aligned(core::alloc::Layout::from_size_align(count, align).unwrap())
        }
    }
    #[inline]
    fn free(&self, h: usize, count: usize) {
        // Its alloc rounds up to a power of two aligned to itself, and so
        // does dealloc: the same call frees an aligned block.
        self.inner.lock().dealloc(h, count)
    }
    fn kva(&self, h: usize) -> *mut u8 {
        arena().kva((h * PAGE) as u64) as *mut u8
    }
}

/// rCore's `bitmap-allocator` 0.4: `BitAlloc256M` (2^28 bits, the largest
/// type; it covers 1 TiB of pages, so one type serves every size here).
pub struct RcoreBitmap {
    inner: spin::Mutex<Box<bitmap_allocator::BitAlloc256M>>,
    pa: u64,
}

pub type BitmapType = bitmap_allocator::BitAlloc256M;

impl Subject for RcoreBitmap {
    type H = usize;
    const NAME: &'static str = "bitmap-allocator";
    fn build(setup: &Setup) -> Self {
        let layout = std::alloc::Layout::new::<BitmapType>();
        // SAFETY: all zeros is a valid BitAlloc (every bit unavailable; it
        // is what its `DEFAULT` is), and the layout is the type's.
        let mut bits: Box<BitmapType> = unsafe {
            let p = std::alloc::alloc_zeroed(layout) as *mut BitmapType;
            assert!(!p.is_null());
            Box::from_raw(p)
        };
        assert!(setup.pages <= BitmapType::CAP);
        for range in &setup.free {
            bits.insert(range.clone());
        }
        RcoreBitmap {
            inner: spin::Mutex::new(bits),
            pa: setup.pa,
        }
    }
    #[inline]
    fn alloc(&self, count: usize, align: usize) -> Option<usize> {
        let mut bits = self.inner.lock();
        if count == 1 && align <= 1 {
            bits.alloc()
        } else {
            bits.alloc_contiguous(None, count, align.trailing_zeros() as usize)
        }
    }
    #[inline]
    fn free(&self, h: usize, count: usize) {
        let mut bits = self.inner.lock();
        let ok = if count == 1 {
            bits.dealloc(h)
        } else {
            bits.dealloc_contiguous(h, count)
        };
        debug_assert!(ok);
        std::hint::black_box(ok);
    }
    fn kva(&self, h: usize) -> *mut u8 {
        arena().kva(self.pa + (h * PAGE) as u64) as *mut u8
    }
}

/// A model of KeOS's page allocator (see shared/reference): one spin-locked
/// bitmap (1 = free) and an `AtomicU64` reference count per page; every
/// allocation scans first-fit from bit 0, skipping all-zero words, with no
/// summary; a free drops the head's count and, at zero, takes the lock and
/// sets the block's bits. Written for this bench; unlike the original it
/// stops at the end of a full bitmap, sets the head count in release builds,
/// checks alignment on the physical frame number, and does not zero-fill
/// (the zero scenario measures that separately).
pub struct KeosModel {
    bitmap: spin::Mutex<Vec<u64>>,
    refcounts: Vec<AtomicU64>,
    pfn: usize,
}

impl KeosModel {
    /// First-fit search from bit 0; `None` when no run fits.
    fn find(bitmap: &[u64], pfn: usize, count: usize, align: usize) -> Option<usize> {
        let bits = bitmap.len() * 64;
        let mut at = 0;
        while at < bits {
            if at % 64 == 0 {
                // Skip words with no free page, but not past the end.
                let mut word = at / 64;
                while word < bitmap.len() && bitmap[word] == 0 {
                    word += 1;
                }
                if word == bitmap.len() {
                    return None;
                }
                at = word * 64;
            }
            if align > 1 && !(pfn + at).is_multiple_of(align) {
                at += 1;
                continue;
            }
            // Count free pages from `at`, bit by bit.
            let start = at;
            loop {
                if at - start == count {
                    return Some(start);
                }
                if at == bits {
                    return None;
                }
                let free = bitmap[at / 64] & (1 << (at % 64)) != 0;
                at += 1;
                if !free {
                    break;
                }
            }
        }
        None
    }
}

impl Subject for KeosModel {
    type H = usize;
    const NAME: &'static str = "KeOS-style";
    fn build(setup: &Setup) -> Self {
        let mut bitmap = vec![0u64; setup.pages.div_ceil(64)];
        for range in &setup.free {
            for page in range.clone() {
                bitmap[page / 64] |= 1 << (page % 64);
            }
        }
        let refcounts = std::iter::repeat_with(|| AtomicU64::new(0)).take(setup.pages).collect();
        KeosModel {
            bitmap: spin::Mutex::new(bitmap),
            refcounts,
            pfn: setup.pfn(),
        }
    }
    #[inline]
    fn alloc(&self, count: usize, align: usize) -> Option<usize> {
        let mut bitmap = self.bitmap.lock();
        let start = Self::find(&bitmap, self.pfn, count, align)?;
        for page in start..start + count {
            bitmap[page / 64] &= !(1 << (page % 64));
        }
        self.refcounts[start].store(1, Ordering::SeqCst);
        Some(start)
    }
    #[inline]
    fn free(&self, h: usize, count: usize) {
        if self.refcounts[h].fetch_sub(1, Ordering::SeqCst) == 1 {
            let mut bitmap = self.bitmap.lock();
            for page in h..h + count {
                bitmap[page / 64] |= 1 << (page % 64);
            }
        }
    }
    fn kva(&self, h: usize) -> *mut u8 {
        arena().kva(((self.pfn + h) * PAGE) as u64) as *mut u8
    }
}

/// Calls `visit` once per allocator, in the table's column order.
pub trait Visitor {
    fn visit<S: Subject>(&mut self);
}

pub fn each_subject(v: &mut impl Visitor) {
    v.visit::<KpallocC>();
    v.visit::<KpallocRust>();
    v.visit::<KeosModel>();
    v.visit::<Buddy>();
    v.visit::<RcoreBitmap>();
}

pub const SUBJECTS: [&str; 5] = [
    KpallocC::NAME,
    KpallocRust::NAME,
    KeosModel::NAME,
    Buddy::NAME,
    RcoreBitmap::NAME,
];

// ---------------------------------------------------------------- scenarios

/// A scenario whose timed unit is one allocation plus its free.
#[derive(Clone, Copy, Debug)]
pub struct PairScenario {
    pub id: &'static str,
    pub title: &'static str,
    pub pages: usize,
    pub state: State,
    pub count: usize,
    pub align: usize,
}

#[derive(Clone, Copy, Debug)]
pub enum State {
    Empty,
    Random(usize),
    FreeAtEnd(usize),
}

impl PairScenario {
    pub fn setup(&self) -> Setup {
        match self.state {
            State::Empty => Setup::empty(self.pages),
            State::Random(used) => Setup::random(self.pages, used, 0x5eed_0000 + used as u64),
            State::FreeAtEnd(used) => Setup::free_at_end(self.pages, used),
        }
    }
}

pub const S1: PairScenario = PairScenario {
    id: "S1",
    title: "empty, 1 page",
    pages: GIB_PAGES,
    state: State::Empty,
    count: 1,
    align: 1,
};
pub const S2: PairScenario = PairScenario {
    id: "S2",
    title: "90% used at random, 1 page",
    pages: GIB_PAGES,
    state: State::Random(90),
    count: 1,
    align: 1,
};
pub const S2B: PairScenario = PairScenario {
    id: "S2b",
    title: "90% used, free pages at the end, 1 page",
    pages: GIB_PAGES,
    state: State::FreeAtEnd(90),
    count: 1,
    align: 1,
};
pub const S3: PairScenario = PairScenario {
    id: "S3",
    title: "50% used at random, 8 pages aligned to 8",
    pages: GIB_PAGES,
    state: State::Random(50),
    count: 8,
    align: 8,
};

/// S5: S2b at these sizes (pages), 1 GiB being S2b itself.
pub const S5_SIZES: [(&str, usize); 4] = [
    ("256 MiB", GIB_PAGES / 4),
    ("1 GiB", GIB_PAGES),
    ("4 GiB", 4 * GIB_PAGES),
    ("64 GiB", 64 * GIB_PAGES),
];

pub fn s5(pages: usize) -> PairScenario {
    PairScenario {
        id: "S5",
        title: "S2b",
        pages,
        ..S2B
    }
}

/// One alloc+free pair of the scenario's shape.
#[inline]
pub fn pair<S: Subject>(s: &S, count: usize, align: usize) {
    let h = s.alloc(count, align).expect("scenario ran out of memory");
    s.free(std::hint::black_box(h), count);
}

/// One page allocated with the allocator's zero flag, then freed.
#[inline]
pub fn zero_flag_pair<S: Subject>(s: &S) {
    let h = s.alloc_zeroed().expect("out of memory");
    s.free(std::hint::black_box(h), 1);
}

/// One page allocated, zeroed by the caller (memset 4 KiB), then freed.
#[inline]
pub fn memset_pair<S: Subject>(s: &S) {
    let h = s.alloc(1, 1).expect("out of memory");
    // SAFETY: the page was just allocated to us; it is arena memory.
    unsafe { std::ptr::write_bytes(s.kva(h), 0, PAGE) };
    s.free(std::hint::black_box(h), 1);
}

/// S4: allocates single pages until the allocator is full (from the empty
/// state), returning the handles and the time taken.
pub fn fill<S: Subject>(s: &S, expect: usize) -> (Vec<S::H>, Duration) {
    let mut handles = Vec::with_capacity(expect);
    let start = Instant::now();
    while let Some(h) = s.alloc(1, 1) {
        handles.push(h);
    }
    let took = start.elapsed();
    assert_eq!(handles.len(), expect, "{} filled a different number of pages", S::NAME);
    (handles, took)
}

/// S4: [`fill`], its handles then shuffled by `rng` (from [`s4_rng`]) into
/// the drain's random order.
pub fn fill_shuffled<S: Subject>(s: &S, expect: usize, rng: &mut Rng) -> (Vec<S::H>, Duration) {
    let (mut handles, took) = fill(s, expect);
    rng.shuffle(&mut handles);
    (handles, took)
}

/// The generator of S4's drain orders: every runner shuffles with it.
pub fn s4_rng() -> Rng {
    Rng::new(4)
}

/// S4: frees every handle (in the order given), returning the time taken.
pub fn drain<S: Subject>(s: &S, handles: &[S::H]) -> Duration {
    let start = Instant::now();
    free_each(s, handles);
    start.elapsed()
}

/// Frees every handle, in the order given: the drain's loop, a function of
/// its own so that `callgrind --toggle-collect='*free_each*'` counts it.
#[inline(never)]
pub fn free_each<S: Subject>(s: &S, handles: &[S::H]) {
    for &h in handles {
        s.free(h, 1);
    }
}

/// S4's setup: 1 GiB, empty.
pub fn s4_setup() -> Setup {
    Setup::empty(GIB_PAGES)
}

/// Times `batch` pairs run by `op`, in ns per pair.
pub fn time_batch(batch: u64, mut op: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..batch {
        op();
    }
    start.elapsed().as_nanos() as f64 / batch as f64
}

/// Two threads on two cores doing S2 pairs on one shared allocator for
/// `pairs` pairs each: aggregate pairs per second. With `threads == 1`, the
/// same on one core.
pub fn threaded_pairs<S: Subject>(s: &S, threads: usize, pairs: u64) -> f64 {
    let barrier = Barrier::new(threads + 1);
    let start = std::thread::scope(|scope| {
        for cpu in 0..threads {
            let barrier = &barrier;
            scope.spawn(move || {
                pin_to_cpu(cpu);
                barrier.wait();
                for _ in 0..pairs {
                    pair(s, S2.count, S2.align);
                }
            });
        }
        barrier.wait();
        Instant::now()
    });
    let took = start.elapsed().as_secs_f64();
    (threads as u64 * pairs) as f64 / took
}

thread_local! {
    /// The CPU this thread is pinned to (0 until pinned), as a kernel's
    /// per-CPU variable would say.
    static CPU: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// kpalloc's `cpu_id` hook: a thread-local read, like a kernel's per-CPU
/// variable.
unsafe extern "C" fn current_cpu() -> u32 {
    CPU.with(std::cell::Cell::get)
}

pub fn pin_to_cpu(cpu: usize) {
    CPU.with(|current| current.set(cpu as u32));
    // SAFETY: a zeroed cpu_set_t is valid; the calls only read it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu % num_cpus(), &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
