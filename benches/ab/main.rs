//! `kpalloc-ab pairs|drain [regions]`: one process's measurement for
//! scripts/ab.sh; with `KPALLOC_AB_CACHES=off`, of kpalloc without per-CPU
//! caches (no `cpu_id` hook: every call takes the lock). This machine's
//! pace changes from second to second, and a slow stretch only adds time,
//! so it prints the minimum and the tenth percentile over many short
//! batches (pairs) or whole drains.

use std::hint::black_box;
use std::time::Instant;

use kpalloc::ffi::{page_alloc, page_free, page_init, page_region_add};
use kpalloc::{PageConfig, PageStatus};

const PAGES: u64 = 1 << 18;
const PAGE: u64 = 4096;
/// The extra regions above the first: as many as asked, of 4 MiB each.
const EXTRA_REGION_BYTES: u64 = 4 << 20;
const MAX_EXTRA_REGIONS: u64 = 15;

std::thread_local!(static CPU: std::cell::Cell<u32> = const { std::cell::Cell::new(0) });

/// The `cpu_id` hook: a thread-local read, as in the criterion benches.
unsafe extern "C" fn current_cpu() -> u32 {
    CPU.with(std::cell::Cell::get)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "pairs".into());
    let regions: u64 = args.next().map_or(1, |n| n.parse().expect("regions: a number"));
    assert!((1..=MAX_EXTRA_REGIONS + 1).contains(&regions), "regions: 1 to 16");

    // 1 GiB for the first region and room for the others. Not zeroed:
    // kpalloc writes a region's metadata before it reads it, and nothing
    // reads a page, so only the metadata is ever touched. (`alloc_zeroed`
    // with a page's alignment wrote all of it, 1.1 GB resident a process.)
    let bytes = PAGES * PAGE + MAX_EXTRA_REGIONS * EXTRA_REGION_BYTES;
    let layout = std::alloc::Layout::from_size_align(bytes as usize, PAGE as usize).unwrap();
    // SAFETY: a non-zero size; the memory is kpalloc's for the process.
    let base = unsafe { std::alloc::alloc(layout) };
    assert!(!base.is_null());
    let config = PageConfig {
        phys_offset: base as u64,
        cpu_id: match std::env::var("KPALLOC_AB_CACHES").as_deref() {
            Ok("off") => None,
            _ => Some(current_cpu),
        },
        ..PageConfig::default()
    };
    // SAFETY: a valid config whose one hook lives for the program; the
    // regions lie in the allocation above, which is never freed.
    unsafe {
        assert_eq!(page_init(&config), PageStatus::OK);
        assert_eq!(page_region_add(0, PAGES * PAGE, 0), PageStatus::OK);
        for i in 0..regions - 1 {
            let start = PAGES * PAGE + i * EXTRA_REGION_BYTES;
            assert_eq!(page_region_add(start, start + EXTRA_REGION_BYTES, 0), PageStatus::OK);
        }
    }

    let mut samples = match mode.as_str() {
        "pairs" => pairs(),
        "drain" => drains(),
        other => panic!("unknown mode {other}: pairs or drain"),
    };
    samples.sort_by(f64::total_cmp);
    let tenth = samples[samples.len() / 10];
    println!("{mode} regions {regions}: min {:.2} p10 {tenth:.2} ns", samples[0]);
}

/// ns per single-page alloc+free pair, over 3000 batches of 10000.
fn pairs() -> Vec<f64> {
    (0..3000)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..10_000 {
                let page = page_alloc(black_box(1), 0);
                // SAFETY: a page just allocated, freed once.
                black_box(unsafe { page_free(page) });
            }
            start.elapsed().as_nanos() as f64 / 10_000.0
        })
        .collect()
}

/// ns per free, over 15 drains of every page in random order.
fn drains() -> Vec<f64> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..15)
        .map(|_| {
            let mut pages: Vec<_> = std::iter::from_fn(|| Some(page_alloc(1, 0)))
                .take_while(|page| !page.is_null())
                .collect();
            // A build that loses pages (a pricing experiment that skips
            // part of the free) would time ever shorter drains whose
            // per-free figure means nothing.
            assert!(
                pages.len() as u64 > PAGES * 9 / 10,
                "only {} pages to drain: the build under test loses freed pages",
                pages.len()
            );
            for i in (1..pages.len()).rev() {
                pages.swap(i, (random() % (i as u64 + 1)) as usize);
            }
            let start = Instant::now();
            for &page in &pages {
                // SAFETY: each page allocated above, freed once.
                black_box(unsafe { page_free(page) });
            }
            start.elapsed().as_nanos() as f64 / pages.len() as f64
        })
        .collect()
}
