//! Fuzzing of the per-CPU caches: libFuzzer bytes decoded into an operation
//! sequence run on an `Allocator::with_cpu_caches`, the CPU number switched
//! between steps, against the shadow of `tests/cache_model` (the same file
//! the cache proptest uses, included here, not copied).
#![no_main]

#[path = "../../tests/cache_model/mod.rs"]
mod cache_model;
#[path = "../../tests/model/mod.rs"]
mod model;

use arbitrary::{Result, Unstructured};
use cache_model::{flag_bits, Harness, Length, Op, Target, BASES, BURST_PAGES, CPUS};
use kpalloc::CpuCaches;
use libfuzzer_sys::fuzz_target;

/// One set of caches for every input: libFuzzer aborts on the first panic,
/// and every input ends with `Harness::finish`, which drains the caches, so
/// they are empty between inputs.
static CACHES: CpuCaches = CpuCaches::new();

/// ZERO, USER and DMA32 each on now and then.
fn flags(u: &mut Unstructured) -> Result<u32> {
    Ok(flag_bits(u.ratio(3u8, 10)?, u.ratio(3u8, 10)?, u.ratio(3u8, 20)?))
}

fn target(u: &mut Unstructured) -> Result<Target> {
    Ok(match u.int_in_range(0u8..=12)? {
        0..=7 => Target::Head(u.arbitrary()?),
        8 | 9 => Target::Interior(u.arbitrary()?, u.arbitrary()?),
        10 | 11 => Target::NotLive(u.arbitrary()?),
        _ => Target::AnyPage(u.arbitrary()?),
    })
}

fn count(u: &mut Unstructured) -> Result<usize> {
    // Up to 9: every length the block caches hold (2, 4, 8), often, and
    // some they do not.
    Ok(match u.int_in_range(0u8..=8)? {
        0..=3 => 1,
        4 | 5 => *u.choose(&[2, 4, 8])?,
        _ => u.int_in_range(1..=9)?,
    })
}

/// Often the block's own length (what the block caches hold), often a
/// page, now and then one that is not a power of two (EINVAL).
fn align(u: &mut Unstructured, count: usize) -> Result<usize> {
    Ok(match u.int_in_range(0u8..=9)? {
        0..=3 => count.next_power_of_two(),
        4..=7 => 1,
        8 => *u.choose(&[2, 4, 8])?,
        _ => *u.choose(&[0, 3])?,
    })
}

fn length(u: &mut Unstructured) -> Result<Length> {
    Ok(if u.ratio(2u8, 3)? {
        Length::Right
    } else {
        let d: i8 = u.int_in_range(1..=8)?;
        Length::Wrong(if u.arbitrary()? { -d } else { d })
    })
}

fn op(u: &mut Unstructured) -> Result<Op> {
    Ok(match u.int_in_range(0u8..=37)? {
        0..=11 => {
            let count = count(u)?;
            Op::Alloc {
                count,
                align: align(u, count)?,
                flags: flags(u)?,
            }
        }
        12 | 13 => {
            let target = if u.ratio(3u8, 4)? {
                Target::NotLive(u.arbitrary()?)
            } else {
                target(u)?
            };
            Op::AllocAt {
                target,
                count: count(u)?,
                flags: flags(u)?,
            }
        }
        14..=18 => Op::Free(target(u)?),
        19..=21 => Op::FreeSized(target(u)?, length(u)?),
        22..=24 => Op::Get(target(u)?),
        25..=29 => Op::Put(target(u)?),
        30 | 31 => Op::Split(target(u)?),
        32 => Op::DrainCaches,
        33..=36 => Op::Cpu(*u.choose(&CPUS)?),
        _ => Op::Burst {
            n: u.int_in_range(8..=40)?,
            alloc: u.arbitrary()?,
            pages: *u.choose(&BURST_PAGES)?,
            flags: flags(u)?,
            seed: u.arbitrary()?,
        },
    })
}

/// One or two regions, back to back: (pages, user pool).
fn regions(u: &mut Unstructured) -> Result<Vec<(u64, bool)>> {
    (0..u.int_in_range(1..=2)?)
        .map(|_| {
            Ok((
                if u.ratio(3u8, 4)? { 96 } else { u.int_in_range(8..=96)? },
                u.arbitrary()?,
            ))
        })
        .collect()
}

fn run(data: &[u8]) -> Result<()> {
    let mut u = Unstructured::new(data);
    let base = BASES[u.choose_index(BASES.len())?];
    let layout = regions(&mut u)?;
    let mut harness = Harness::new(base, &layout, &CACHES);
    let mut steps = 0;
    while !u.is_empty() && steps < 300 {
        match op(&mut u) {
            Ok(op) => harness.apply(op),
            Err(_) => break,
        }
        steps += 1;
    }
    harness.finish();
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
