//! Property test of the per-CPU caches: random operation sequences on an
//! `Allocator::with_cpu_caches`, the CPU number switched between steps,
//! checked at every step against the shadow of `tests/cache_model` (which
//! `fuzz/fuzz_targets/cached.rs` drives from libFuzzer bytes).

mod cache_model;
mod model;
#[path = "common/tallied_cases.rs"]
mod tallied_cases;

use cache_model::{flag_bits, Harness, Length, Op, Target, BASES, BURST_PAGES, CPUS};
use kpalloc::CpuCaches;
use model::fakeable;
use proptest::prelude::*;
use tallied_cases::run_tallied;

/// ZERO, USER and DMA32 each on now and then.
fn flags() -> impl Strategy<Value = u32> {
    (
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.15),
    )
        .prop_map(|(zero, user, dma32)| flag_bits(zero, user, dma32))
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        8 => any::<u32>().prop_map(Target::Head),
        2 => (any::<u32>(), any::<u32>()).prop_map(|(n, k)| Target::Interior(n, k)),
        2 => any::<u32>().prop_map(Target::NotLive),
        1 => any::<u32>().prop_map(Target::AnyPage),
    ]
}

fn count() -> impl Strategy<Value = usize> {
    // Up to 9: every length the block caches hold (2, 4, 8), often, and
    // some they do not.
    prop_oneof![4 => Just(1usize), 2 => prop::sample::select(vec![2usize, 4, 8]), 3 => 1usize..=9]
}

/// A burst's block length: single pages, or the lengths the block caches
/// hold.
fn burst_pages() -> impl Strategy<Value = usize> {
    prop::sample::select(BURST_PAGES.to_vec())
}

/// An allocation: often aligned to its own length (as a kernel asks for
/// stacks and the like, and what the block caches hold), often to a page,
/// now and then to an alignment that is not a power of two (`EINVAL`, even
/// with a block cached).
fn alloc() -> impl Strategy<Value = Op> {
    let align = prop_oneof![
        8 => Just(None),
        8 => Just(Some(1usize)),
        2 => prop::sample::select(vec![2usize, 4, 8]).prop_map(Some),
        2 => prop::sample::select(vec![0usize, 3]).prop_map(Some),
    ];
    (count(), align, flags()).prop_map(|(count, align, flags)| Op::Alloc {
        count,
        align: align.unwrap_or(count.next_power_of_two()),
        flags,
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => alloc(),
        2 => (
            prop_oneof![3 => any::<u32>().prop_map(Target::NotLive), 1 => target()],
            count(),
            flags()
        )
            .prop_map(|(target, count, flags)| Op::AllocAt { target, count, flags }),
        5 => target().prop_map(Op::Free),
        3 => (
            target(),
            prop_oneof![2 => Just(Length::Right), 1 => (-8i8..=8).prop_filter("wrong", |d| *d != 0).prop_map(Length::Wrong)]
        )
            .prop_map(|(target, length)| Op::FreeSized(target, length)),
        3 => target().prop_map(Op::Get),
        5 => target().prop_map(Op::Put),
        2 => target().prop_map(Op::Split),
        1 => Just(Op::DrainCaches),
        4 => prop::sample::select(CPUS.to_vec()).prop_map(Op::Cpu),
        1 => (8usize..=40, any::<bool>(), burst_pages(), flags(), any::<u32>())
            .prop_map(|(n, alloc, pages, flags, seed)| Op::Burst { n, alloc, pages, flags, seed }),
    ]
}

/// Physical bases: low memory, straddling 4 GiB (DMA32 fits in part of the
/// memory), high memory (DMA32 never fits): [`BASES`]. Miri, and a 32-bit
/// target, only get the low one.
fn bases() -> Vec<u64> {
    if cfg!(miri) {
        BASES[..1].to_vec()
    } else {
        fakeable(&BASES)
    }
}

/// One or two regions, back to back: (pages, user pool).
fn regions() -> impl Strategy<Value = Vec<(u64, bool)>> {
    prop::collection::vec((prop_oneof![3 => Just(96u64), 1 => 8u64..=96], any::<bool>()), 1..=2)
}

/// Cases per run: `PROPTEST_CASES` overrides.
const CASES: u32 = 256;

fn scenario() -> impl Strategy<Value = (u64, Vec<(u64, bool)>, Vec<Op>)> {
    (
        prop::sample::select(bases()),
        regions(),
        prop::collection::vec(op(), 1..if cfg!(miri) { 40 } else { 160 }),
    )
}

#[test]
fn cached_allocator_matches_the_shadow() {
    let cases = if cfg!(miri) { 4 } else { CASES };
    run_tallied("cache proptest", cases, scenario(), |(base, layout, ops), totals| {
        // Fresh caches for every case: proptest catches a panic and reruns
        // cases while shrinking, and a panicking case can leave pages in
        // the caches it used.
        let caches: &'static CpuCaches = Box::leak(Box::new(CpuCaches::new()));
        let mut harness = Harness::new(base, &layout, caches);
        for op in ops {
            harness.apply(op);
        }
        harness.finish();
        for (outcome, n) in harness.outcomes.take() {
            *totals.entry(outcome).or_default() += n;
        }
    });
}
