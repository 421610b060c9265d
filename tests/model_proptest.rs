//! Property test: random operation sequences against the allocator and the
//! reference model of `tests/model`, compared at every step (answers,
//! addresses, statistics, check(), every page's count and length).

mod model;
#[path = "common/tallied_cases.rs"]
mod tallied_cases;

use model::{fakeable, Differential, Op, Target, PHYS_BASES};
use std::collections::BTreeMap;
use tallied_cases::run_tallied;

use proptest::prelude::*;

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        6 => any::<u32>().prop_map(Target::Head),
        2 => (any::<u32>(), any::<u32>()).prop_map(|(n, k)| Target::Interior(n, k)),
        1 => (any::<u32>(), any::<u16>()).prop_map(|(n, k)| Target::Unaligned(n, k)),
        1 => (any::<u32>(), any::<u32>()).prop_map(|(n, k)| Target::Metadata(n, k)),
        2 => any::<u32>().prop_map(Target::FreePage),
        2 => any::<u32>().prop_map(Target::AnyPage),
        1 => any::<u32>().prop_map(Target::Outside),
        1 => Just(Target::Zero),
    ]
}

fn count() -> impl Strategy<Value = usize> {
    prop_oneof![
        12 => 1usize..=4,
        6 => 1usize..=70,
        1 => 1usize..=600,
        1 => prop::sample::select(vec![0, 0x7FFF_FFFF, 0x8000_0000, 1 << (usize::BITS - 24), usize::MAX]),
    ]
}

fn align() -> impl Strategy<Value = usize> {
    prop_oneof![
        8 => Just(1usize),
        6 => (1u32..=9).prop_map(|k| 1usize << k),
        1 => prop::sample::select(vec![0, 3, 12, 1 << 20, 1 << (usize::BITS - 24), 1 << (usize::BITS - 2), 1 << (usize::BITS - 1), usize::MAX]),
    ]
}

fn offset() -> impl Strategy<Value = i16> {
    prop_oneof![6 => Just(0i16), 1 => -4095i16..=4095]
}

fn add_region() -> impl Strategy<Value = Op> {
    (
        any::<u32>(),
        prop_oneof![1 => 0u32..=3, 6 => 2u32..=400, 1 => 400u32..=5000],
        offset(),
        offset(),
        prop::bool::weighted(0.3),
    )
        .prop_map(|(start, pages, start_off, end_off, user)| Op::AddRegion {
            start,
            pages,
            start_off,
            end_off,
            user,
        })
}

/// Mostly DMA32 and USER off; ZERO often.
fn flags() -> impl Strategy<Value = u32> {
    (
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.25),
        prop::bool::weighted(0.15),
    )
        .prop_map(|(zero, user, dma32)| (zero as u32) << 1 | (user as u32) << 2 | (dma32 as u32) << 3)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => add_region(),
        10 => (count(), align(), flags(), any::<bool>())
            .prop_map(|(count, align, flags, assert)| Op::Alloc { count, align, flags, assert }),
        3 => (prop_oneof![3 => any::<u32>().prop_map(Target::FreePage), 1 => target()], prop_oneof![4 => 1usize..=8, 1 => count()], flags())
            .prop_map(|(target, count, flags)| Op::AllocAt { target, count, flags }),
        7 => target().prop_map(Op::Free),
        4 => target().prop_map(Op::Get),
        6 => target().prop_map(Op::Put),
        2 => target().prop_map(Op::Split),
        1 => target().prop_map(Op::Refcount),
        1 => target().prop_map(Op::BlockPages),
    ]
}

fn memory_pages() -> impl Strategy<Value = u64> {
    prop_oneof![8 => 64u64..=600, 2 => 600u64..=2048, 1 => Just(4200u64)]
}

fn scenario() -> impl Strategy<Value = (u64, u64, Vec<Op>, Vec<Op>)> {
    (
        prop::sample::select(fakeable(&PHYS_BASES)),
        memory_pages(),
        prop::collection::vec(add_region(), 1..4),
        prop::collection::vec(op(), 1..120),
    )
}

/// Cases per run: `PROPTEST_CASES` overrides.
const CASES: u32 = 256;

fn run(base: u64, pages: u64, regions: &[Op], ops: &[Op], totals: &mut BTreeMap<String, u64>) {
    let mut diff = Differential::new(base, pages);
    for op in regions.iter().chain(ops) {
        diff.apply(op);
    }
    diff.drain();
    for (outcome, n) in diff.outcomes {
        *totals.entry(outcome).or_default() += n;
    }
}

#[test]
#[cfg_attr(miri, ignore)]
fn allocator_matches_the_model() {
    run_tallied(
        "model proptest",
        CASES,
        scenario(),
        |(base, pages, regions, ops), totals| run(base, pages, &regions, &ops, totals),
    );
}

/// The same harness on a fixed pseudo-random walk, small enough for Miri.
#[test]
fn allocator_matches_the_model_on_a_fixed_walk() {
    let steps = if cfg!(miri) { 30 } else { 3000 };
    let mut seed = 0x243F_6A88_85A3_08D3u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut diff = Differential::new(PHYS_BASES[2], 200);
    if cfg!(miri) {
        // check() and the stats still run after every step.
        diff.full_compare_pages = 0;
    }
    for op in [
        Op::AddRegion {
            start: 0,
            pages: 90,
            start_off: 0,
            end_off: 0,
            user: false,
        },
        Op::AddRegion {
            start: 150,
            pages: 50,
            start_off: 0,
            end_off: 0,
            user: true,
        },
        Op::AddRegion {
            start: 95,
            pages: 50,
            start_off: 100,
            end_off: -100,
            user: false,
        },
        Op::AddRegion {
            start: 80,
            pages: 20,
            start_off: 0,
            end_off: 0,
            user: false,
        },
    ] {
        diff.apply(&op);
    }
    for _ in 0..steps {
        let r = next();
        let n = (r >> 8) as u32;
        let target = match r % 8 {
            0..=3 => Target::Head(n),
            4 => Target::Interior(n, (r >> 40) as u32),
            5 => Target::FreePage(n),
            6 => Target::AnyPage(n),
            _ => Target::Unaligned(n, (r >> 40) as u16),
        };
        let flags = ((r >> 20) & 0xe) as u32 & if r >> 60 == 0 { 0xe } else { 0x6 };
        let op = match (r >> 3) % 10 {
            0..=3 => Op::Alloc {
                count: 1 + (r >> 32) as usize % 9,
                align: 1 << ((r >> 50) % 4),
                flags,
                assert: true,
            },
            4 => Op::AllocAt {
                target,
                count: 1 + (r >> 32) as usize % 3,
                flags,
            },
            5 | 6 => Op::Free(target),
            7 => Op::Get(target),
            8 => Op::Put(target),
            _ => Op::Split(target),
        };
        diff.apply(&op);
    }
    diff.drain();
}
