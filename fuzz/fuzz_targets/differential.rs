//! Differential fuzzing: libFuzzer bytes decoded into an operation sequence
//! run against the allocator and the reference model of `tests/model`
//! (the same file the proptest uses, included here, not copied).
#![no_main]

#[path = "../../tests/model/mod.rs"]
mod model;

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use model::{Differential, Op, Target, PHYS_BASES};

fn target(u: &mut Unstructured) -> Result<Target> {
    Ok(match u.int_in_range(0u8..=15)? {
        0..=5 => Target::Head(u.arbitrary()?),
        6 | 7 => Target::Interior(u.arbitrary()?, u.arbitrary()?),
        8 => Target::Unaligned(u.arbitrary()?, u.arbitrary()?),
        9 => Target::Metadata(u.arbitrary()?, u.arbitrary()?),
        10 | 11 => Target::FreePage(u.arbitrary()?),
        12 | 13 => Target::AnyPage(u.arbitrary()?),
        14 => Target::Outside(u.arbitrary()?),
        _ => Target::Zero,
    })
}

fn count(u: &mut Unstructured) -> Result<usize> {
    Ok(match u.int_in_range(0u8..=15)? {
        0..=8 => u.int_in_range(1..=4)?,
        9..=12 => u.int_in_range(1..=70)?,
        13 | 14 => u.int_in_range(1..=600)?,
        _ => *u.choose(&[0, 0x7FFF_FFFF, 0x8000_0000, 1 << 40, usize::MAX])?,
    })
}

fn align(u: &mut Unstructured) -> Result<usize> {
    Ok(match u.int_in_range(0u8..=15)? {
        0..=7 => 1,
        8..=14 => 1 << u.int_in_range(1..=9)?,
        _ => *u.choose(&[0, 3, 12, 1 << 20, 1 << 40, 1 << 62, 1 << 63, usize::MAX])?,
    })
}

fn offset(u: &mut Unstructured) -> Result<i16> {
    Ok(if u.ratio(1u8, 6)? {
        u.int_in_range(-4095..=4095)?
    } else {
        0
    })
}

fn add_region(u: &mut Unstructured) -> Result<Op> {
    Ok(Op::AddRegion {
        start: u.arbitrary()?,
        pages: match u.int_in_range(0u8..=7)? {
            0 => u.int_in_range(0..=3)?,
            7 => u.int_in_range(400..=5000)?,
            _ => u.int_in_range(2..=400)?,
        },
        start_off: offset(u)?,
        end_off: offset(u)?,
        user: u.ratio(3u8, 10)?,
    })
}

fn flags(u: &mut Unstructured) -> Result<u32> {
    Ok(u.int_in_range(0u32..=7)? << 1)
}

fn op(u: &mut Unstructured) -> Result<Op> {
    Ok(match u.int_in_range(0u8..=35)? {
        0 => add_region(u)?,
        1..=10 => Op::Alloc {
            count: count(u)?,
            align: align(u)?,
            flags: flags(u)?,
            assert: u.arbitrary()?,
        },
        11..=13 => {
            let target = if u.ratio(3u8, 4)? {
                Target::FreePage(u.arbitrary()?)
            } else {
                target(u)?
            };
            let count = if u.ratio(4u8, 5)? {
                u.int_in_range(1..=8)?
            } else {
                count(u)?
            };
            Op::AllocAt {
                target,
                count,
                flags: flags(u)?,
            }
        }
        14..=20 => Op::Free(target(u)?),
        21..=24 => Op::Get(target(u)?),
        25..=30 => Op::Put(target(u)?),
        31 | 32 => Op::Split(target(u)?),
        33 => Op::Refcount(target(u)?),
        _ => Op::BlockPages(target(u)?),
    })
}

fn run(data: &[u8]) -> Result<()> {
    let mut u = Unstructured::new(data);
    let base = PHYS_BASES[u.choose_index(PHYS_BASES.len())?];
    let pages = match u.int_in_range(0u8..=15)? {
        0..=11 => u.int_in_range(64..=512)?,
        12..=14 => u.int_in_range(512..=2048)?,
        _ => 4200,
    };
    let mut diff = Differential::new(base, pages);
    // Page-by-page comparison every step only for small memories: speed.
    diff.full_compare_pages = 512;
    for _ in 0..u.int_in_range(1..=3)? {
        diff.apply(&add_region(&mut u)?);
    }
    let mut steps = 0;
    while !u.is_empty() && steps < 400 {
        match op(&mut u) {
            Ok(op) => diff.apply(&op),
            Err(_) => break,
        }
        steps += 1;
    }
    diff.drain();
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
