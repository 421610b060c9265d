//! A region of physical memory and the metadata at its front: the
//! [`Region`] header, the table of all regions, the free bitmap with its
//! summaries, and one 32-bit slot per page.

#![deny(unsafe_code)]

use core::mem::{align_of, size_of};
use core::sync::atomic::{AtomicU32, Ordering};

use crate::cache::{CachedPage, Magazine};
use crate::freemap::{FreeMap, Request, SummaryLayout};
use crate::status::PageStatus;
use crate::sync::LockedBy;
use crate::tag::Tag;
use crate::types::{Pfn, Pool, KPALLOC_PAGE_SIZE, PAGE_REFCOUNT_MAX};

/// Bitmap bits per word; bit 0 of a region's bitmap has a frame number
/// that is a multiple of this.
const WORD_PAGES: u64 = 64;
/// Slot tag of an interior (non-head) page; the low bits hold the block's
/// length in pages.
const INTERIOR: u32 = 0x8000_0000;
/// Slot of a free page filled with the poison pattern: an interior tag with
/// no length, which no block has.
const POISONED_FREE: u32 = INTERIOR;
/// Slot of a free page held in a per-CPU cache: an interior tag with length
/// one, which no block has (a one-page block has no interior).
pub(crate) const CACHED: u32 = INTERIOR | 1;
/// Largest block: its length must fit beside the interior tag.
pub(crate) const MAX_BLOCK_PAGES: usize = PAGE_REFCOUNT_MAX as usize;

/// What a page's slot says about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    /// Free (the bitmap agrees); `poisoned` if filled with the poison
    /// pattern when it was freed (`PAGE_DEBUG_POISON`).
    Free { poisoned: bool },
    /// First page of an allocated block, with the block's reference count.
    Head(u32),
    /// Later page of an allocated block of this many pages.
    Interior(usize),
    /// Free, held in a per-CPU cache (used in the bitmap).
    Cached,
}

impl Slot {
    #[inline]
    pub(crate) fn decode(raw: u32) -> Slot {
        if raw == 0 || raw == POISONED_FREE {
            Slot::Free {
                poisoned: raw == POISONED_FREE,
            }
        } else if raw & INTERIOR == 0 {
            Slot::Head(raw)
        } else if raw == CACHED {
            Slot::Cached
        } else {
            Slot::Interior((raw & !INTERIOR) as usize)
        }
    }

    /// If a page with slot `next` is an interior page of a block, that
    /// block's length (at least 2: the page before it heads the block).
    ///
    /// One comparison, not [`Slot::decode`]: its chain of tests branches on
    /// the next page's state, as random as the frees that ask (callgrind's
    /// branch simulation of a random drain: 1.39 mispredicted branches per
    /// free with it, 0.80 without). Only a real block's interior slot is at
    /// least `INTERIOR | 2`.
    #[inline]
    pub(crate) fn interior_pages(next: u32) -> Option<usize> {
        (next >= INTERIOR | 2).then_some((next & !INTERIOR) as usize)
    }

    /// Length of a block whose head is followed by a page with slot
    /// `next`: that page's interior length, else 1.
    #[inline]
    pub(crate) fn block_pages_before(next: u32) -> usize {
        Slot::interior_pages(next).unwrap_or(1)
    }

    pub(crate) fn interior(block_pages: usize) -> u32 {
        debug_assert!(block_pages <= MAX_BLOCK_PAGES);
        INTERIOR | block_pages as u32
    }
}

/// The parts of a region that change under the allocator's lock.
pub(crate) struct RegionState {
    pub(crate) map: FreeMap<'static>,
    pub(crate) free_pages: u64,
    /// No free run is longer than this (an upper bound, kept cheaply), so
    /// requests above it skip the region without searching.
    pub(crate) run_bound: u64,
    /// Allocation site of each block, at its head's bit (`PAGE_DEBUG_TRACK`;
    /// empty otherwise).
    pub(crate) tags: &'static mut [Tag],
}

impl RegionState {
    /// Marks every usable page of a new region free.
    pub(crate) fn free_usable(&mut self, region: &Region) {
        let (first, end) = region.usable_bits();
        self.map.set(first, end - first, true);
        self.free_pages = (end - first) as u64;
        self.run_bound = self.free_pages;
    }

    /// Finds the first free run of `count` pages aligned to `align` that
    /// ends at or below frame `limit`; returns its first bit.
    // In line, as FreeMap::find_run is in it: the search then runs in the
    // caller's frame (callgrind: 25 instructions fewer per S3 pair).
    #[inline]
    pub(crate) fn find_run(&mut self, region: &Region, count: usize, align: usize, limit: Pfn) -> Option<usize> {
        if self.free_pages < count as u64 || self.run_bound < count as u64 || limit <= region.usable {
            return None;
        }
        let (_, end_bit) = region.usable_bits();
        let limit_bit = if limit < region.end {
            (limit.0 - region.base.0) as usize
        } else {
            end_bit
        };
        let Some(bit) = self.map.find(Request {
            count,
            align,
            limit: limit_bit,
        }) else {
            if align == 1 && limit_bit == end_bit {
                // Nothing this long is free here: skip the region until a free
                // makes a longer run possible.
                self.run_bound = count as u64 - 1;
            }
            return None;
        };
        Some(bit)
    }

    /// Whether the `count` pages from `bit` are all free.
    pub(crate) fn is_free_run(&self, bit: usize, count: usize) -> bool {
        self.map.all(bit, count, true)
    }

    /// Makes the free run of `count` pages at `bit` a block with one
    /// reference.
    #[inline]
    pub(crate) fn claim(&mut self, region: &Region, bit: usize, count: usize, tag: Tag) {
        if let Some(site) = self.tags.get_mut(bit) {
            *site = tag;
        }
        self.map.set(bit, count, false);
        self.free_pages -= count as u64;
        region.publish_block(bit, count);
    }

    /// Gives every page of the `pages`-page block at `bit` the block's
    /// allocation site, as a split makes each page a block of its own.
    pub(crate) fn spread_tag(&mut self, bit: usize, pages: usize) {
        if let Some(&site) = self.tags.get(bit) {
            self.tags[bit + 1..bit + pages].fill(site);
        }
    }

    /// Moves up to `want` free pages, lowest first, into `magazine`: used
    /// in the bitmap, cached in their slots. Returns how many it moved.
    pub(crate) fn claim_for_cache(&mut self, region: &'static Region, want: usize, magazine: &mut Magazine) -> usize {
        // Never more than fits: a page marked cached must be in a magazine.
        let want = want.min(magazine.room());
        let mut moved = 0;
        while moved < want && self.free_pages > 0 {
            let Some((first_bit, mut taken)) = self.map.take_lowest(want - moved) else {
                break;
            };
            moved += taken.count_ones() as usize;
            while taken != 0 {
                let bit = first_bit + taken.trailing_zeros() as usize;
                taken &= taken - 1;
                region.mark_cached(bit, 1);
                magazine.push(CachedPage::new(region, bit));
            }
        }
        self.free_pages -= moved as u64;
        moved
    }

    /// Returns the block of `pages` pages headed at `bit` (whose count the
    /// caller has already taken to zero) to the free pages, marked as
    /// holding the poison pattern if `poisoned`.
    #[inline]
    pub(crate) fn release(&mut self, region: &Region, bit: usize, pages: usize, poisoned: bool) {
        clear_slots(region, bit, pages, if poisoned { POISONED_FREE } else { 0 });
        self.map.set(bit, pages, true);
        self.account_released(1, pages);
    }

    /// [`RegionState::release`] of one of the blocks a flush releases
    /// together, unpoisoned: the caller counts them once with
    /// [`RegionState::account_released`], and a single page goes back
    /// through [`FreeMap::free_one_of_many`].
    #[inline]
    pub(crate) fn release_unaccounted(&mut self, region: &Region, bit: usize, pages: usize) {
        clear_slots(region, bit, pages, 0);
        if pages == 1 {
            self.map.free_one_of_many(bit);
        } else {
            self.map.set(bit, pages, true);
        }
    }

    /// Counts `blocks` blocks of `pages` pages in all, released.
    #[inline]
    pub(crate) fn account_released(&mut self, blocks: usize, pages: usize) {
        self.free_pages += pages as u64;
        // Each freed block may join the free runs on both its sides: a new
        // run spans at most `blocks + 1` old ones and the freed pages.
        let joined = self.run_bound.saturating_mul(blocks as u64 + 1);
        self.run_bound = joined.saturating_add(pages as u64).min(self.free_pages);
    }

    /// The first allocated block at or after `from`.
    pub(crate) fn next_block(&self, region: &Region, from: usize) -> Option<BlockInfo> {
        let (first, end) = region.usable_bits();
        let mut bit = from.max(first);
        while bit < end {
            match region.slot(bit) {
                Slot::Head(refcount) => {
                    let tag = self.tags.get(bit).copied().unwrap_or(Tag::NONE);
                    return Some(BlockInfo {
                        bit,
                        pages: region.block_pages(bit),
                        refcount,
                        tag,
                    });
                }
                Slot::Interior(_) | Slot::Free { .. } | Slot::Cached => bit += 1,
            }
        }
        None
    }

    /// Checks this region's metadata; returns the pages used by blocks and
    /// the pages cached, or the first bit that disagrees.
    pub(crate) fn check(&self, region: &Region) -> Result<(u64, u64), usize> {
        if !self.map.summaries_agree() {
            return Err(0);
        }
        let (first, end) = region.usable_bits();
        let (mut used, mut cached) = (0, 0);
        let mut bit = 0;
        while bit < region.slots.len() {
            let usable = first <= bit && bit < end;
            let free = self.map.is_free(bit);
            match region.slot(bit) {
                Slot::Free { poisoned } if free == usable && (usable || !poisoned) => bit += 1,
                Slot::Cached if usable && !free => {
                    cached += 1;
                    bit += 1;
                }
                Slot::Head(_) if usable && !free => {
                    let pages = region.block_pages(bit);
                    let body_ok = bit + pages <= end
                        && (bit + 1..bit + pages)
                            .all(|page| region.slot(page) == Slot::Interior(pages) && !self.map.is_free(page));
                    if !body_ok {
                        return Err(bit);
                    }
                    used += pages as u64;
                    bit += pages;
                }
                _ => return Err(bit),
            }
        }
        let free = (end - first) as u64 - used - cached;
        if free != self.free_pages
            || self.map.count_free() as u64 != free
            || (self.map.largest_run() as u64) > self.run_bound
        {
            return Err(first);
        }
        Ok((used, cached))
    }
}

/// A block found by [`RegionState::next_block`].
pub(crate) struct BlockInfo {
    pub(crate) bit: usize,
    pub(crate) pages: usize,
    pub(crate) refcount: u32,
    pub(crate) tag: Tag,
}

/// A region's header, written at the start of its first page. Immutable
/// once published, except through its slots (atomics) and its locked state.
pub(crate) struct Region {
    /// First page of the region, where its metadata starts.
    pub(crate) start: Pfn,
    /// First page handed out by the allocator (after the metadata).
    pub(crate) usable: Pfn,
    /// One past the last page.
    pub(crate) end: Pfn,
    /// Frame number of bitmap bit 0 and slot 0: `usable` rounded down to 64.
    pub(crate) base: Pfn,
    pub(crate) pool: Pool,
    /// One per bitmap bit: [`Slot`] encoded; atomics so that `get` and `put`
    /// work without the lock.
    pub(crate) slots: &'static [AtomicU32],
    pub(crate) state: LockedBy<RegionState>,
}

impl Region {
    pub(crate) fn total_pages(&self) -> u64 {
        self.end.0 - self.start.0
    }

    pub(crate) fn meta_pages(&self) -> u64 {
        self.usable.0 - self.start.0
    }

    /// The bit of a usable page, or `ENOTMANAGED` for metadata and outside.
    #[inline]
    pub(crate) fn bit_of(&self, pfn: Pfn) -> Result<usize, PageStatus> {
        if self.usable <= pfn && pfn < self.end {
            Ok((pfn.0 - self.base.0) as usize)
        } else {
            Err(PageStatus::ENOTMANAGED)
        }
    }

    #[inline]
    pub(crate) fn pfn_of(&self, bit: usize) -> Pfn {
        self.base.add(bit as u64)
    }

    /// The first and one-past-last usable bits.
    pub(crate) fn usable_bits(&self) -> (usize, usize) {
        (
            (self.usable.0 - self.base.0) as usize,
            (self.end.0 - self.base.0) as usize,
        )
    }

    #[inline]
    pub(crate) fn slot(&self, bit: usize) -> Slot {
        Slot::decode(self.slots[bit].load(Ordering::Acquire))
    }

    /// Makes the `count` pages at `bit` a block with one reference: its
    /// interior first, the head last (with Release), so that a lock-free
    /// get that sees the head sees the block.
    #[inline]
    pub(crate) fn publish_block(&self, bit: usize, count: usize) {
        // (A test, not an empty loop, for single pages: their hot paths
        // then check no bounds for it.)
        if count > 1 {
            let interior = Slot::interior(count);
            for slot in &self.slots[bit + 1..bit + count] {
                slot.store(interior, Ordering::Relaxed);
            }
        }
        self.slots[bit].store(1, Ordering::Release);
    }

    /// Marks the `count` pages at `bit` as held in a per-CPU cache.
    #[inline]
    pub(crate) fn mark_cached(&self, bit: usize, count: usize) {
        for slot in &self.slots[bit..bit + count] {
            slot.store(CACHED, Ordering::Relaxed);
        }
    }

    /// Length of the allocated block headed at `bit`.
    #[inline]
    pub(crate) fn block_pages(&self, head: usize) -> usize {
        Slot::block_pages_before(self.slot_after(head))
    }

    /// The raw slot of the page after `head` (free past the last).
    #[inline]
    pub(crate) fn slot_after(&self, head: usize) -> u32 {
        self.slots.get(head + 1).map_or(0, |s| s.load(Ordering::Relaxed))
    }
}

/// Stores `free` (a free slot, poisoned or not) in the slots of the
/// `pages` pages from `bit`.
#[inline]
fn clear_slots(region: &Region, bit: usize, pages: usize, free: u32) {
    if pages == 1 {
        // Most frees: one store, not the loop's set-up.
        region.slots[bit].store(free, Ordering::Relaxed);
    } else {
        for slot in &region.slots[bit..bit + pages] {
            slot.store(free, Ordering::Relaxed);
        }
    }
}

/// Up to this many regions, [`RegionTable::find`] scans rather than
/// bisects.
const LINEAR_SEARCH_REGIONS: usize = 16;

/// Every region of an allocator, sorted by address; each new region carries
/// a new table in its own metadata, and the newest table is the current one.
pub(crate) struct RegionTable {
    pub(crate) regions: &'static [&'static Region],
    /// `regions[i].start`, side by side: the search for an address reads
    /// one or two cache lines, not a header page of every region it passes.
    pub(crate) starts: &'static [Pfn],
    /// The first [`LINEAR_SEARCH_REGIONS`] of `starts`, then `Pfn(u64::MAX)`
    /// (above every address): counted four at a time, with no odd end.
    /// In the table itself: that measured faster than the count through
    /// `starts` (16.6 against 17.0 ns a pair, 1 to 3 regions).
    first_starts: [Pfn; LINEAR_SEARCH_REGIONS],
}

impl RegionTable {
    /// A table of `regions`, whose starts are `starts`, with `first_starts`
    /// still to fill: built where it is placed (a copy on the stack would
    /// take `page_region_add` past its stack budget).
    pub(crate) const fn unfilled(regions: &'static [&'static Region], starts: &'static [Pfn]) -> Self {
        RegionTable {
            regions,
            starts,
            first_starts: [Pfn(u64::MAX); LINEAR_SEARCH_REGIONS],
        }
    }

    /// Copies the first starts into `first_starts`.
    pub(crate) fn fill_first_starts(&mut self) {
        for (first, &start) in self.first_starts.iter_mut().zip(self.starts) {
            *first = start;
        }
    }

    /// The region whose pages (metadata included) contain `pfn`.
    #[inline]
    pub(crate) fn find(&self, pfn: Pfn) -> Option<&'static Region> {
        self.find_index(pfn).map(|(_, region)| region)
    }

    /// [`RegionTable::find`], with the region's index in the table.
    #[inline]
    pub(crate) fn find_index(&self, pfn: Pfn) -> Option<(usize, &'static Region)> {
        // With a few regions, count the starts at or below `pfn`: the
        // compares are independent and run side by side, where a binary
        // search makes each load wait for the one before (with two or
        // three regions too: a free then took 2 ns longer in the bench).
        let after = match self.first_starts.get(..self.regions.len().next_multiple_of(4)) {
            Some(starts) => count_at_or_below(starts, pfn),
            None => self.starts.partition_point(|&start| start <= pfn),
        };
        let index = after.checked_sub(1)?;
        let region = *self.regions.get(index)?;
        (pfn < region.end).then_some((index, region))
    }
}

/// How many of `starts` (a multiple of four long) are at or below `pfn`,
/// in four sums side by side: one sum would make the lookup wait a cycle
/// per region (0.25 ns a region on every free, measured).
#[inline]
fn count_at_or_below(starts: &[Pfn], pfn: Pfn) -> usize {
    let mut lanes = [0; 4];
    for four in starts.chunks_exact(4) {
        for (lane, &start) in lanes.iter_mut().zip(four) {
            *lane += usize::from(start <= pfn);
        }
    }
    (lanes[0] + lanes[1]) + (lanes[2] + lanes[3])
}

/// Where everything goes in a new region's metadata, in bytes from the
/// region's first byte.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RegionLayout {
    pub(crate) start: Pfn,
    pub(crate) usable: Pfn,
    pub(crate) end: Pfn,
    pub(crate) base: Pfn,
    pub(crate) words: usize,
    pub(crate) summary_words: usize,
    pub(crate) table_len: usize,
    pub(crate) table_at: usize,
    pub(crate) table_entries_at: usize,
    pub(crate) table_starts_at: usize,
    pub(crate) words_at: usize,
    pub(crate) summary_at: usize,
    pub(crate) slots_at: usize,
    /// Allocation sites, one per slot (only with `PAGE_DEBUG_TRACK`).
    pub(crate) tags: usize,
    pub(crate) tags_at: usize,
    pub(crate) meta_bytes: usize,
}

const fn align_up(offset: usize, align: usize) -> usize {
    offset.next_multiple_of(align)
}

impl RegionLayout {
    /// Lays out a region of pages `[start, end)` that will be region number
    /// `table_len` (counting from 1). `ETOOSMALL` if the metadata leaves no
    /// usable page.
    pub(crate) fn new(start: Pfn, end: Pfn, table_len: usize, tracking: bool) -> Result<RegionLayout, PageStatus> {
        let needed = |meta_pages| {
            Self::with_meta_pages(start, end, table_len, tracking, meta_pages)
                .map(|layout| layout.meta_bytes.div_ceil(KPALLOC_PAGE_SIZE) as u64)
        };
        // The metadata shrinks (or stays) as it takes more pages, since it
        // then covers fewer: what it needs with none is enough, and the
        // fewest pages that hold it lie a step or two below.
        let mut meta_pages = needed(0)?;
        while meta_pages > 1 && needed(meta_pages - 1).is_ok_and(|fewer| fewer < meta_pages) {
            meta_pages -= 1;
        }
        Self::with_meta_pages(start, end, table_len, tracking, meta_pages)
    }

    fn with_meta_pages(
        start: Pfn,
        end: Pfn,
        table_len: usize,
        tracking: bool,
        meta_pages: u64,
    ) -> Result<RegionLayout, PageStatus> {
        let usable = start.add(meta_pages);
        if usable >= end {
            return Err(PageStatus::ETOOSMALL);
        }
        let base = Pfn(usable.0 / WORD_PAGES * WORD_PAGES);
        let words = (end.0 - base.0).div_ceil(WORD_PAGES) as usize;
        let summary_words = SummaryLayout::new(words).words(words);
        let table_at = align_up(size_of::<Region>(), align_of::<RegionTable>());
        let table_entries_at = align_up(table_at + size_of::<RegionTable>(), align_of::<&Region>());
        let table_starts_at = align_up(table_entries_at + table_len * size_of::<&Region>(), align_of::<Pfn>());
        let words_at = align_up(table_starts_at + table_len * size_of::<Pfn>(), align_of::<u64>());
        let summary_at = words_at + words * size_of::<u64>();
        let slots_at = summary_at + summary_words * size_of::<u64>();
        let bits = words * WORD_PAGES as usize;
        // One slot past the bitmap's last bit, always free: every page has
        // a slot after it, where a cached free reads the block's length.
        let slots = bits + 1;
        let tags_at = align_up(slots_at + slots * size_of::<AtomicU32>(), align_of::<Tag>());
        let tags = if tracking { bits } else { 0 };
        let meta_bytes = tags_at + tags * size_of::<Tag>();
        Ok(RegionLayout {
            start,
            usable,
            end,
            base,
            words,
            summary_words,
            table_len,
            table_at,
            table_entries_at,
            table_starts_at,
            words_at,
            summary_at,
            slots_at,
            tags,
            tags_at,
            meta_bytes,
        })
    }

    /// One per bitmap bit, and the free one after the last.
    pub(crate) fn slots(&self) -> usize {
        self.words * WORD_PAGES as usize + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_encode_free_heads_and_interiors() {
        assert_eq!(Slot::decode(0), Slot::Free { poisoned: false });
        assert_eq!(Slot::decode(POISONED_FREE), Slot::Free { poisoned: true });
        assert_eq!(Slot::decode(CACHED), Slot::Cached);
        assert_eq!(Slot::decode(1), Slot::Head(1));
        assert_eq!(Slot::decode(PAGE_REFCOUNT_MAX), Slot::Head(PAGE_REFCOUNT_MAX));
        assert_eq!(Slot::decode(Slot::interior(512)), Slot::Interior(512));
        assert_eq!(
            Slot::decode(Slot::interior(MAX_BLOCK_PAGES)),
            Slot::Interior(MAX_BLOCK_PAGES)
        );
    }

    #[test]
    fn only_an_interior_slot_makes_a_block_longer_than_one_page() {
        let special = [
            0,
            1,
            2,
            PAGE_REFCOUNT_MAX,
            POISONED_FREE,
            CACHED,
            Slot::interior(2),
            Slot::interior(MAX_BLOCK_PAGES),
        ];
        let spread = (0..1 << 12).map(|i: u32| i.wrapping_mul(0x9E37_79B9));
        for raw in special.into_iter().chain(spread) {
            let decoded = match Slot::decode(raw) {
                Slot::Interior(pages) => pages,
                _ => 1,
            };
            assert_eq!(Slot::block_pages_before(raw), decoded, "slot {raw:#x}");
            assert_eq!(
                Slot::interior_pages(raw),
                (decoded > 1).then_some(decoded),
                "slot {raw:#x}"
            );
        }
    }

    #[test]
    fn metadata_costs_about_four_bytes_and_an_eighth_per_page() {
        let pages = 1u64 << 18; // 1 GiB
        let layout = RegionLayout::new(Pfn(256), Pfn(256 + pages), 1, false).unwrap();
        let per_page = layout.meta_bytes as f64 / pages as f64;
        assert!(per_page < 4.2, "{per_page} bytes per page");
        assert_eq!(
            layout.usable.0 - layout.start.0,
            layout.meta_bytes.div_ceil(4096) as u64
        );
        assert!(layout.base.0 % 64 == 0 && layout.base <= layout.usable);
    }

    #[test]
    #[cfg_attr(miri, ignore)] // arithmetic only, and about 140000 layouts
    fn metadata_takes_the_fewest_pages_that_hold_it() {
        // Every size up to 16384 pages (64 MiB), every 61st up to 65536,
        // from starts on and off a 64-page boundary (where the bitmap
        // begins).
        for pages in (2..=1 << 14).chain((1 << 14..1 << 16).step_by(61)) {
            for start in [0, 1, 63, 1000] {
                let (start, end) = (Pfn(start), Pfn(start + pages));
                for tracking in [false, true] {
                    let Ok(layout) = RegionLayout::new(start, end, 3, tracking) else {
                        continue;
                    };
                    let meta_pages = layout.usable.0 - layout.start.0;
                    assert!(layout.meta_bytes as u64 <= meta_pages * 4096);
                    // One page fewer would not hold its own metadata.
                    let fewer = RegionLayout::with_meta_pages(start, end, 3, tracking, meta_pages - 1).unwrap();
                    assert!(
                        fewer.meta_bytes as u64 > (meta_pages - 1) * 4096,
                        "{pages} pages from {start:?}: {meta_pages} metadata pages, {} bytes with one fewer",
                        fewer.meta_bytes
                    );
                }
            }
        }
    }

    #[test]
    fn a_region_needs_room_for_metadata_and_one_page() {
        assert_eq!(
            RegionLayout::new(Pfn(0), Pfn(1), 1, false).unwrap_err(),
            PageStatus::ETOOSMALL
        );
        let two = RegionLayout::new(Pfn(0), Pfn(2), 1, false).unwrap();
        assert_eq!(two.usable, Pfn(1));
    }
}
