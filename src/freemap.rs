//! The free-page bitmap of one region and the summaries that make its
//! first-fit search cost a few word reads at any size and occupancy.
//!
//! Bit `i` of the bitmap is page `i` of the region's bit space (1 = free).
//! Bit 0 is a page whose frame number is a multiple of 64, so every aligned
//! group of 2^k bits (k <= 6) is a physically aligned group of pages.
//!
//! For each order `k` in `0..ORDERS` a hierarchy of summary bitmaps records
//! which bitmap words hold a free, aligned run of 2^k pages: level 1 has a
//! bit per bitmap word, level 2 a bit per level-1 word, and so on up to a
//! single word. Order 0 answers "any free page here", order 6 "this whole
//! word is free". A search for `count` pages picks the largest order that
//! every fitting run must contain, finds the first word holding such a run
//! in `levels` word reads, and checks the exact fit there.

#![deny(unsafe_code)]

/// Summary orders: aligned free runs of 1, 2, 4, ..., 64 pages.
pub(crate) const ORDERS: usize = 7;
/// Levels needed for 2^36 bitmap words (2^42 pages), beyond any real memory.
const MAX_LEVELS: usize = 6;
const BITS: usize = 64;

/// Bits that start an aligned group of `2^k` bits, indexed by `k`.
const ALIGN_MASK: [u64; ORDERS] = [
    u64::MAX,
    0x5555_5555_5555_5555,
    0x1111_1111_1111_1111,
    0x0101_0101_0101_0101,
    0x0001_0001_0001_0001,
    0x0000_0001_0000_0001,
    0x0000_0000_0000_0001,
];

/// One bit per order: whether `word` holds a free aligned run of that order.
#[inline]
fn order_bits(word: u64) -> u8 {
    let a1 = word & (word >> 1) & ALIGN_MASK[1];
    let a2 = a1 & (a1 >> 2);
    let a3 = a2 & (a2 >> 4) & ALIGN_MASK[3];
    let a4 = a3 & (a3 >> 8);
    let a5 = a4 & (a4 >> 16) & ALIGN_MASK[5];
    (word != 0) as u8
        | ((a1 != 0) as u8) << 1
        | ((a2 & ALIGN_MASK[2] != 0) as u8) << 2
        | ((a3 != 0) as u8) << 3
        | ((a4 & ALIGN_MASK[4] != 0) as u8) << 4
        | ((a5 != 0) as u8) << 5
        | ((word == u64::MAX) as u8) << 6
}

/// One bit per order: whether the aligned run of that order around bit
/// `offset` is wholly free in `word`. Without a branch: the run of 2^k bits
/// around `offset` holds a bit `b` exactly when `b ^ offset < 2^k`, so it
/// misses the nearest used bit on each side (and so every used bit) for
/// every `k` up to the highest bit in which that used bit differs from
/// `offset`, on both sides.
#[inline]
fn orders_free_around(word: u64, offset: usize) -> u8 {
    let used = !word;
    // Below: the highest used bit under `offset`, or all ones if none
    // (which differs from `offset` in bit 63).
    let below = used & ((1 << offset) - 1);
    let nearest_below = 63u64.wrapping_sub(below.leading_zeros() as u64);
    // Above: the lowest used bit over `offset`, or 64 if none (which
    // differs from it in bit 6, a whole word).
    let above = used & (u64::MAX << offset << 1);
    let nearest_above = above.trailing_zeros() as u64;
    let offset = offset as u64;
    // The lower of the two highest differing bits, and at most order 6.
    let zeros = (nearest_below ^ offset)
        .leading_zeros()
        .max((nearest_above ^ offset).leading_zeros())
        .max(63 - 6);
    ((2u32 << (63 - zeros)) - 1) as u8
}

/// Where each summary level lives inside the summary slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SummaryLayout {
    levels: usize,
    offset: [usize; MAX_LEVELS],
    len: [usize; MAX_LEVELS],
    per_order: usize,
    /// Where the per-word order bits (one byte per bitmap word, eight to a
    /// summary word) start.
    cache: usize,
}

impl SummaryLayout {
    /// The layout for a bitmap of `words` words (at least one).
    pub const fn new(words: usize) -> Self {
        let mut layout = SummaryLayout {
            levels: 0,
            offset: [0; MAX_LEVELS],
            len: [0; MAX_LEVELS],
            per_order: 0,
            cache: 0,
        };
        let mut below = words;
        loop {
            let len = below.div_ceil(BITS);
            layout.offset[layout.levels] = layout.per_order;
            layout.len[layout.levels] = len;
            layout.per_order += len;
            layout.levels += 1;
            if len <= 1 || layout.levels == MAX_LEVELS {
                break;
            }
            below = len;
        }
        layout.cache = layout.per_order * ORDERS;
        layout
    }

    /// Summary words needed for all orders and the order cache of `words`
    /// bitmap words.
    pub const fn words(&self, words: usize) -> usize {
        self.cache + words.div_ceil(8)
    }

    #[inline]
    fn index(&self, order: usize, level: usize, word: usize) -> usize {
        order * self.per_order + self.offset[level] + word
    }
}

/// What a search is for: a run of `count` pages whose first page has a frame
/// number that is a multiple of `align` (a power of two), ending at or
/// below bit `limit`.
#[derive(Clone, Copy, Debug)]
pub struct Request {
    pub count: usize,
    pub align: usize,
    pub limit: usize,
}

/// A region's free bitmap and its summaries. All pages start used.
pub struct FreeMap<'m> {
    words: &'m mut [u64],
    summary: &'m mut [u64],
    layout: SummaryLayout,
    /// Frame number of bit 0, divided by 64 (for alignments above 64 pages).
    base_word: u64,
    /// For each order, no bitmap word below this one has a run of it:
    /// searches start here, and most end in the first word they read.
    cursor: [usize; ORDERS],
    /// The word whose summary bits still say it has a run of each order in
    /// `stale_orders`, though it lost its last one. A run freed again where
    /// it was taken, as an alloc+free pair does, then flips no summary; the
    /// clear is made when another word loses a run, or before a search of
    /// the order reads the summaries.
    stale_word: usize,
    stale_orders: u8,
    /// Bitmap and summary words read by searches: the work-count tests'
    /// measure of complexity.
    #[cfg(test)]
    reads: core::cell::Cell<u64>,
    /// Summary bits flipped: the tests' measure of upkeep.
    #[cfg(test)]
    flips: u64,
}

impl<'m> FreeMap<'m> {
    /// Takes over `words` and `summary` (sized by [`SummaryLayout`]) and
    /// marks every page used.
    // Inlined into the region's construction: one stack frame fewer on the
    // deepest path of page_region_add (the kernel's 1 KiB stack budget).
    #[inline(always)]
    pub fn new(words: &'m mut [u64], summary: &'m mut [u64], base_word: u64) -> Self {
        let layout = SummaryLayout::new(words.len());
        assert!(
            !words.is_empty() && summary.len() == layout.words(words.len()),
            "summary sized for the bitmap"
        );
        words.fill(0);
        summary.fill(0);
        FreeMap {
            words,
            summary,
            layout,
            base_word,
            cursor: [0; ORDERS],
            stale_word: 0,
            stale_orders: 0,
            #[cfg(test)]
            reads: core::cell::Cell::new(0),
            #[cfg(test)]
            flips: 0,
        }
    }

    /// Number of bits (pages) the bitmap covers.
    pub fn bits(&self) -> usize {
        self.words.len() * BITS
    }

    #[inline]
    fn read(&self, word: usize) -> u64 {
        #[cfg(test)]
        self.reads.set(self.reads.get() + 1);
        self.words[word]
    }

    #[inline]
    fn read_summary(&self, index: usize) -> u64 {
        #[cfg(test)]
        self.reads.set(self.reads.get() + 1);
        self.summary[index]
    }

    /// Words read by searches so far (test builds only).
    #[cfg(test)]
    pub fn words_read(&self) -> u64 {
        self.reads.get()
    }

    /// Whether page `bit` is free: never past the bitmap's end.
    pub fn is_free(&self, bit: usize) -> bool {
        self.words
            .get(bit / BITS)
            .is_some_and(|word| word & (1 << (bit % BITS)) != 0)
    }

    /// Marks `count` pages from `start` free (`true`) or used.
    #[inline]
    pub fn set(&mut self, start: usize, count: usize, free: bool) {
        if count == 1 {
            return if free {
                self.free_one(start)
            } else {
                self.use_one(start)
            };
        }
        self.set_run(start, count, free)
    }

    // In line (its one-word case is short; the loop stays out of line):
    // callgrind, 16 instructions fewer per S3 pair.
    #[inline]
    fn set_run(&mut self, start: usize, count: usize, free: bool) {
        if count > 0 && start / BITS == (start + count - 1) / BITS {
            // Within one word (most runs): one mask, one store.
            let word = start / BITS;
            let mask = (u64::MAX >> (BITS - count)) << (start % BITS);
            let old = self.words[word];
            return self.store(word, if free { old | mask } else { old & !mask });
        }
        self.set_words(start, count, free)
    }

    /// [`FreeMap::set_run`] across words. Out of line: the one-word case
    /// then saves no registers for this loop.
    #[inline(never)]
    fn set_words(&mut self, start: usize, count: usize, free: bool) {
        let end = start + count;
        let mut bit = start;
        while bit < end {
            let word = bit / BITS;
            let from = bit % BITS;
            let to = core::cmp::min(BITS, end - word * BITS);
            let mask = if to - from == BITS {
                u64::MAX
            } else {
                ((1u64 << (to - from)) - 1) << from
            };
            let old = self.words[word];
            self.store(word, if free { old | mask } else { old & !mask });
            bit = word * BITS + to;
        }
    }

    /// Whether every page of the range has the given state.
    pub fn all(&self, start: usize, count: usize, free: bool) -> bool {
        (start..start + count).all(|bit| self.is_free(bit) == free)
    }

    /// The cached order bits of bitmap word `word`.
    #[inline]
    fn cached_orders(&self, word: usize) -> u8 {
        (self.summary[self.layout.cache + word / 8] >> (word % 8 * 8)) as u8
    }

    /// [`FreeMap::cached_orders`] for a search (counted as a word read).
    #[inline]
    fn read_orders(&self, word: usize) -> u8 {
        (self.read_summary(self.layout.cache + word / 8) >> (word % 8 * 8)) as u8
    }

    /// Marks page `bit` used. Only an order whose aligned run around the
    /// page was free can lose its last run in the word, so the summaries
    /// are checked only as far up as the runs around the page were free.
    #[inline]
    fn use_one(&mut self, bit: usize) {
        let (word, offset) = (bit / BITS, bit % BITS);
        let old = self.words[word];
        let new = old & !(1 << offset);
        self.words[word] = new;
        let mut lost = (new == 0) as u8;
        let mut runs = new;
        for (order, aligned) in ALIGN_MASK.iter().enumerate().skip(1) {
            let run = run_around(order, offset);
            if old & run != run {
                break;
            }
            runs = runs & (runs >> (1 << (order - 1))) & aligned;
            lost |= ((runs == 0) as u8) << order;
        }
        if lost != 0 {
            self.update_orders_out_of_line(word, self.cached_orders(word) & !lost, lost);
        }
    }

    /// Marks page `bit` free, alone: under the lock, which the next call
    /// waits for until this one's last step is done, so the test of the
    /// orders (when [`FreeMap::free_bit`]'s one test says the page
    /// completes one) stops at the first whose run around the page is not
    /// wholly free. Out of line: in line, it makes its callers save
    /// registers for it.
    #[inline(never)]
    fn free_one(&mut self, bit: usize) {
        self.free_bit(bit, |new, offset| {
            let mut full = 0;
            for order in 0..ORDERS {
                let run = run_around(order, offset);
                if new & run != run {
                    break;
                }
                full |= 1 << order;
            }
            full
        })
    }

    /// [`FreeMap::free_one`] for one of many frees in a row, in no order (a
    /// per-CPU cache's flush): without a branch per order, whose outcome
    /// would be as random as the frees, and whose latency the other frees
    /// of the batch hide. (The random drain's flushes, by callgrind's branch
    /// simulation: 0.23 mispredicted branches per free, 0.74 with the loop
    /// of `free_one`; `scripts/ab.sh` drain, best of six: 22.1 against 24.2
    /// ns per free. From the nearest used bits, [`orders_free_around`]
    /// takes 57 instructions a free where `order_bits` of the whole word
    /// took 68: 21.0 to 22.1 ns against 22.4 to 22.8. In `free_one` it
    /// slows the pairs without caches, whose next call waits for it, from
    /// 28.4–28.7 to 29.5–29.9 ns.) In line, in the flush's loop: 6
    /// instructions fewer a free, and 20.1–20.5 ns against 20.7–22.3.
    #[inline(always)]
    pub fn free_one_of_many(&mut self, bit: usize) {
        self.free_bit(bit, orders_free_around)
    }

    /// Sets bit `bit` and brings the summaries of the orders it completed
    /// up to date; `full_orders(new, offset)` gives the orders whose
    /// aligned run around the bit the new word value holds wholly free, or
    /// any superset of them that the word holds.
    ///
    /// A word's orders run from 0 up without a gap (a free aligned run
    /// holds free aligned runs of every smaller order), so the bit gains
    /// the word an order only if the run of the word's first missing order
    /// around it is now wholly free: one mask test, and `full_orders` only
    /// then (a free in the random drain, by callgrind: 247 instructions
    /// against 257).
    #[inline(always)]
    fn free_bit(&mut self, bit: usize, full_orders: impl FnOnce(u64, usize) -> u8) {
        let (word, offset) = (bit / BITS, bit % BITS);
        let new = self.words[word] | 1 << offset;
        self.words[word] = new;
        let cached = self.cached_orders(word);
        // Without a gap, the word's orders below the last read as a
        // number are the length of its first missing order's run (at most
        // a word) less one.
        let below = (cached & ((1 << (ORDERS - 1)) - 1)) as usize;
        let run = run_of_size_around(below + 1, offset);
        if new & run != run {
            return;
        }
        let gained = full_orders(new, offset) & !cached;
        if gained != 0 {
            self.update_orders_out_of_line(word, cached | gained, gained);
        }
    }

    /// Writes a bitmap word and brings the summaries of every order whose
    /// answer changed up to date.
    #[inline]
    fn store(&mut self, word: usize, new: u64) {
        self.words[word] = new;
        let now = order_bits(new);
        let changed = self.cached_orders(word) ^ now;
        if changed != 0 {
            self.update_orders(word, now, changed);
        }
    }

    /// Records `now` as word `word`'s order bits and brings the summaries
    /// of the `changed` orders up to date, but for the stale word's.
    #[inline]
    fn update_orders(&mut self, word: usize, now: u8, changed: u8) {
        let cache = &mut self.summary[self.layout.cache + word / 8];
        let shift = word % 8 * 8;
        *cache = *cache & !(0xFF << shift) | (now as u64) << shift;
        let lost = changed & !now;
        let mut gained = changed & now;
        let was_stale = word == self.stale_word;
        if was_stale {
            // Regained runs' summary bits were never cleared; and, stale
            // since the word had them, no cursor is above it.
            gained &= !self.stale_orders;
            self.stale_orders = (self.stale_orders & !changed) | lost;
        }
        // (A word that both loses and gains orders, which setting or
        // clearing one mask never makes, flips its gains first.)
        if gained != 0 {
            self.flip_orders(word, gained, true);
        }
        if !was_stale && lost != 0 {
            // Last, as a tail call: no common path then keeps values across
            // a call (callgrind: 10 instructions fewer per S3 pair).
            self.make_stale(word, lost);
        }
    }

    /// Settles the stale word and makes `word` the stale word for `lost`.
    #[inline(never)]
    fn make_stale(&mut self, word: usize, lost: u8) {
        self.settle(self.stale_orders);
        (self.stale_word, self.stale_orders) = (word, lost);
    }

    /// Clears the stale word's summary bits of `orders`: before a search of
    /// one of them reads the summaries.
    #[inline]
    fn settle(&mut self, orders: u8) {
        let due = self.stale_orders & orders;
        if due != 0 {
            self.stale_orders &= !due;
            self.flip_orders(self.stale_word, due, false);
        }
    }

    /// [`FreeMap::update_orders`] for the single-page paths: inlined there,
    /// it adds more instructions (register saves) than the call.
    #[inline(never)]
    fn update_orders_out_of_line(&mut self, word: usize, now: u8, changed: u8) {
        self.update_orders(word, now, changed)
    }

    /// Sets (`set`) or clears word `word`'s summary bits of `orders`.
    #[inline(never)]
    fn flip_orders(&mut self, word: usize, mut orders: u8, set: bool) {
        while orders != 0 {
            let order = orders.trailing_zeros() as usize;
            orders &= orders - 1;
            if set && word < self.cursor[order] {
                self.cursor[order] = word;
            }
            self.flip_summary(order, word, set);
        }
    }

    // Not inlined: inlined, its level loop is unrolled and every level's
    // masks computed up front, though most flips stop at the first level.
    #[inline(never)]
    fn flip_summary(&mut self, order: usize, word: usize, set: bool) {
        #[cfg(test)]
        {
            self.flips += 1;
        }
        let mut index = word;
        for level in 0..self.layout.levels {
            let at = self.layout.index(order, level, index / BITS);
            let bit = 1u64 << (index % BITS);
            let before = self.summary[at];
            let after = if set { before | bit } else { before & !bit };
            self.summary[at] = after;
            if (before == 0) == (after == 0) {
                return;
            }
            index /= BITS;
        }
    }

    /// The first bitmap word at or after `from` whose order-`order` summary
    /// bit is set.
    fn next_word(&self, order: usize, from: usize) -> Option<usize> {
        let layout = &self.layout;
        let mut index = from;
        let mut level = 0;
        // Climb until a summary word holds a set bit at or after `index`.
        let found = loop {
            if level == layout.levels {
                return None;
            }
            let word = index / BITS;
            if word >= layout.len[level] {
                return None;
            }
            let bits = self.read_summary(layout.index(order, level, word)) & (u64::MAX << (index % BITS));
            if bits != 0 {
                break word * BITS + bits.trailing_zeros() as usize;
            }
            index = word + 1;
            level += 1;
        };
        // Descend to the first set bit beneath it.
        let mut index = found;
        while level > 0 {
            level -= 1;
            let bits = self.read_summary(layout.index(order, level, index));
            index = index * BITS + bits.trailing_zeros() as usize;
        }
        Some(index)
    }

    /// The lowest bit where a run fitting `req` starts, if any.
    #[inline]
    pub fn find(&mut self, req: Request) -> Option<usize> {
        if req.count == 1 && req.align == 1 {
            return self.find_one(req.limit);
        }
        self.find_run(req)
    }

    #[inline]
    fn find_run(&mut self, req: Request) -> Option<usize> {
        let Request { count, align, limit } = req;
        debug_assert!(count >= 1 && align.is_power_of_two());
        if count > limit.min(self.bits()) {
            return None;
        }
        let order = filter_order(count, align);
        // With the run's first page aligned to 2^order, the summary hit is the
        // word where the run starts; otherwise the run may start one word
        // earlier and reach into the hit word.
        let starts_at_hit = align >= 1 << order;
        let words_per_align = (align / BITS).max(1) as u64;
        self.settle(1 << order);
        // No word below the cursor has a run of this order: if the cursor's
        // word has one, it is the first hit; otherwise the summaries find
        // it, and it is the new cursor.
        let cursor = self.cursor[order];
        let mut hit = if cursor < self.words.len() && self.read_orders(cursor) & (1 << order) != 0 {
            Some(cursor)
        } else {
            let hit = self.next_word(order, cursor);
            self.cursor[order] = hit.unwrap_or(self.words.len());
            hit
        };
        // The lowest word not yet ruled out as the start of a fit.
        let mut next = 0;
        while let Some(word) = hit {
            if word * BITS >= limit {
                return None;
            }
            if words_per_align > 1 {
                let absolute = self.base_word + word as u64;
                let aligned = absolute.checked_next_multiple_of(words_per_align)?;
                if aligned != absolute {
                    next = usize::try_from(aligned - self.base_word).ok()?;
                    hit = self.next_word(order, next);
                    continue;
                }
            }
            if !starts_at_hit && word > next {
                if let Some(bit) = self.fit_from(word - 1, req) {
                    return Some(bit);
                }
            }
            if let Some(bit) = self.fit_from(word, req) {
                return Some(bit);
            }
            next = word + 1;
            hit = self.next_word(order, next);
        }
        None
    }

    /// The lowest free page below `limit`: most often in the word at the
    /// order-0 cursor.
    #[inline]
    fn find_one(&mut self, limit: usize) -> Option<usize> {
        let cursor = self.cursor[0];
        let word = if cursor < self.words.len() && self.read(cursor) != 0 {
            cursor
        } else {
            self.settle(1);
            let found = self.next_word(0, cursor);
            self.cursor[0] = found.unwrap_or(self.words.len());
            found?
        };
        let bit = word * BITS + self.words[word].trailing_zeros() as usize;
        (bit < limit).then_some(bit)
    }

    /// Marks up to `max` (at least one) free pages of the lowest word with a
    /// free page used; returns the word's first bit and the pages taken.
    pub fn take_lowest(&mut self, max: usize) -> Option<(usize, u64)> {
        let word = self.find_one(self.bits())? / BITS;
        let free = self.words[word];
        let mut taken = free;
        // Keep the lowest `max` free pages of the word.
        for _ in 0..max.min(BITS) {
            taken &= taken - 1;
            if taken == 0 {
                break;
            }
        }
        let taken = free ^ taken;
        self.store(word, free & !taken);
        Some((word * BITS, taken))
    }

    /// The lowest bit in word `word` where a run fitting `req` starts.
    fn fit_from(&self, word: usize, req: Request) -> Option<usize> {
        let Request { count, align, limit } = req;
        let first = word * BITS;
        // Highest start that keeps the run below `limit`.
        let last_start = limit.checked_sub(count)?.checked_sub(first)?;
        let in_limit = if last_start >= BITS - 1 {
            u64::MAX
        } else {
            (1u64 << (last_start + 1)) - 1
        };
        let aligned = if align <= BITS {
            ALIGN_MASK[align.trailing_zeros() as usize]
        } else {
            1 // callers only pass aligned words for alignments above a word
        };
        let here = self.read(word);
        if count <= BITS {
            let starts = if count == 1 {
                here
            } else if count <= align {
                // An aligned start leaves room for the run in its own word.
                run_starts(here, count)
            } else {
                let after = if word + 1 < self.words.len() {
                    self.read(word + 1)
                } else {
                    0
                };
                run_starts(here as u128 | (after as u128) << BITS, count) as u64
            };
            let fits = starts & aligned & in_limit;
            return (fits != 0).then(|| first + fits.trailing_zeros() as usize);
        }
        // A long run: the free top of this word, whole free words, then the
        // free bottom of one more word.
        let top_free = here.leading_ones() as usize;
        let offset = (BITS - top_free).next_multiple_of(align.min(BITS));
        if top_free == 0 || offset >= BITS || in_limit & (1 << offset) == 0 {
            return None;
        }
        let mut needed = count - (BITS - offset);
        let mut next = word + 1;
        while needed >= BITS {
            if self.read(next) != u64::MAX {
                return None;
            }
            needed -= BITS;
            next += 1;
        }
        if needed > 0 && (self.read(next).trailing_ones() as usize) < needed {
            return None;
        }
        Some(first + offset)
    }

    /// Number of free pages.
    pub fn count_free(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Length of the longest run of free pages.
    pub fn largest_run(&self) -> usize {
        let (mut best, mut current) = (0, 0);
        for &word in self.words.iter() {
            if word == u64::MAX {
                current += BITS;
                continue;
            }
            best = best.max(current + word.trailing_ones() as usize);
            best = best.max(longest_inner_run(word));
            current = word.leading_ones() as usize;
        }
        best.max(current)
    }

    /// Whether every summary bit agrees with the bitmap (a stale word's
    /// bits set, as they are until settled).
    pub fn summaries_agree(&self) -> bool {
        let layout = &self.layout;
        let cache_agrees = (0..self.words.len()).all(|word| self.cached_orders(word) == order_bits(self.words[word]));
        let cursors_agree = (0..ORDERS).all(|order| {
            (0..self.cursor[order].min(self.words.len())).all(|word| order_bits(self.words[word]) & (1 << order) == 0)
        });
        if !cache_agrees || !cursors_agree {
            return false;
        }
        for order in 0..ORDERS {
            let stale = self.stale_orders & (1 << order) != 0;
            if stale && (self.stale_word >= self.words.len() || self.cached_orders(self.stale_word) & (1 << order) != 0)
            {
                return false;
            }
            for word in 0..layout.len[0] * BITS {
                let expected = stale && word == self.stale_word
                    || word < self.words.len() && order_bits(self.words[word]) & (1 << order) != 0;
                let at = layout.index(order, 0, word / BITS);
                if (self.summary[at] >> (word % BITS) & 1 != 0) != expected {
                    return false;
                }
            }
            for level in 1..layout.levels {
                for index in 0..layout.len[level] * BITS {
                    let expected =
                        index < layout.len[level - 1] && self.summary[layout.index(order, level - 1, index)] != 0;
                    let at = layout.index(order, level, index / BITS);
                    if (self.summary[at] >> (index % BITS) & 1 != 0) != expected {
                        return false;
                    }
                }
            }
        }
        true
    }
}

/// The bits of the aligned run of 2^`order` pages that holds bit `offset`.
#[inline]
fn run_around(order: usize, offset: usize) -> u64 {
    run_of_size_around(1 << order, offset)
}

/// The bits of the aligned run of `size` pages (a power of two, at most a
/// word) that holds bit `offset`.
#[inline]
fn run_of_size_around(size: usize, offset: usize) -> u64 {
    u64::MAX >> (BITS - size) << (offset & !(size - 1))
}

/// The largest order whose aligned free run every run fitting
/// (`count`, `align`) must contain, capped at a whole word.
fn filter_order(count: usize, align: usize) -> usize {
    // Any `count` consecutive pages hold an aligned run of 2^k pages when
    // 2^(k+1) - 1 <= count.
    let unaligned = (count + 1).ilog2() as usize - 1;
    // An aligned start begins an aligned run of min(align, count) pages.
    let aligned = (align.trailing_zeros() as usize).min(count.ilog2() as usize);
    unaligned.max(aligned).min(ORDERS - 1)
}

/// Bits of `bits` that start `count` consecutive set bits.
#[inline]
fn run_starts<B: Copy + core::ops::BitAnd<Output = B> + core::ops::Shr<usize, Output = B>>(bits: B, count: usize) -> B {
    let mut starts = bits;
    let mut covered = 1;
    while covered < count {
        let step = covered.min(count - covered);
        starts = starts & (starts >> step);
        covered += step;
    }
    starts
}

/// Length of the longest run of set bits inside `word`.
fn longest_inner_run(mut word: u64) -> usize {
    let mut len = 0;
    while word != 0 {
        word &= word << 1;
        len += 1;
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec;
    use std::vec::Vec;

    struct Owned {
        words: Vec<u64>,
        summary: Vec<u64>,
    }

    impl Owned {
        fn new(pages: usize) -> Self {
            let words = pages.div_ceil(BITS);
            Owned {
                words: vec![0; words],
                summary: vec![0; SummaryLayout::new(words).words(words)],
            }
        }
        fn map(&mut self, base_word: u64) -> FreeMap<'_> {
            FreeMap::new(&mut self.words, &mut self.summary, base_word)
        }
    }

    /// The obviously correct answer: try every bit as a start.
    fn first_fit_by_scan(map: &FreeMap, req: Request, base_word: u64) -> Option<usize> {
        let bits = map.bits().min(req.limit);
        // free_from[i]: free pages in a row from bit i.
        let mut free_from = vec![0; map.bits() + 1];
        for bit in (0..map.bits()).rev() {
            free_from[bit] = if map.is_free(bit) { free_from[bit + 1] + 1 } else { 0 };
        }
        (0..bits).find(|&start| {
            (base_word as usize * BITS + start) % req.align == 0
                && start + req.count <= bits
                && free_from[start] >= req.count
        })
    }

    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn orders_free_around_a_bit_are_those_of_its_aligned_runs() {
        let mut state = 11;
        let words = [0, u64::MAX, 0xF0, 0x8000_0000_0000_0001, 0x7FFF_FFFF_FFFF_FFFE];
        let randoms = (0..if cfg!(miri) { 50 } else { 5000 }).map(|n| {
            // Sparse, dense and in between.
            let r = xorshift(&mut state);
            match n % 3 {
                0 => r,
                1 => r | xorshift(&mut state),
                _ => r & xorshift(&mut state),
            }
        });
        for word in words.into_iter().chain(randoms) {
            for offset in 0..BITS {
                let word = word | 1 << offset;
                let expected = (0..ORDERS)
                    .filter(|&order| word & run_around(order, offset) == run_around(order, offset))
                    .fold(0u8, |orders, order| orders | 1 << order);
                assert_eq!(orders_free_around(word, offset), expected, "{word:#x} around {offset}");
            }
        }
    }

    #[test]
    fn order_bits_find_each_aligned_run() {
        assert_eq!(order_bits(0xF0), 0b111);
        assert_eq!(order_bits(0x78), 0b011, "four free pages, not aligned to four");
        assert_eq!(order_bits(0xFF00), 0b1111);
        assert_eq!(order_bits(0xFFFF_FFFF_0000_0000), 0b11_1111);
        assert_eq!(order_bits(u64::MAX), 0x7F);
        assert_eq!(order_bits(1 << 63), 1);
        assert_eq!(order_bits(0), 0);
        // Against the definition, bit by bit.
        let mut seed = 0x1234_5678_9ABC_DEF1u64;
        for _ in 0..if cfg!(miri) { 200 } else { 2000 } {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let word = seed & (seed >> 3) | (seed << 11);
            for order in 0..ORDERS {
                let size = 1 << order;
                let mask = if size == 64 { u64::MAX } else { (1u64 << size) - 1 };
                let expected = (0..64 / size).any(|chunk| (word >> (chunk * size)) & mask == mask);
                assert_eq!(order_bits(word) >> order & 1 == 1, expected, "{word:#x} order {order}");
            }
        }
    }

    #[test]
    fn filter_order_is_implied_by_every_fit() {
        assert_eq!(filter_order(1, 1), 0);
        assert_eq!(filter_order(8, 8), 3);
        assert_eq!(filter_order(8, 1), 2);
        assert_eq!(filter_order(3, 1), 1);
        assert_eq!(filter_order(1000, 1), 6);
        assert_eq!(filter_order(1, 512), 0);
    }

    #[test]
    fn layout_has_one_word_at_the_top() {
        let layout = SummaryLayout::new(1);
        assert_eq!((layout.levels, layout.per_order), (1, 1));
        let layout = SummaryLayout::new(64 * 64 + 1);
        assert_eq!(layout.levels, 3);
        assert_eq!(layout.len[..3], [65, 2, 1]);
    }

    #[test]
    fn search_matches_a_bit_by_bit_scan_on_random_maps() {
        let mut seed = 0x9E37_79B9_7F4A_7C15;
        // Under Miri a few rounds: this module has no unsafe code, and 12
        // rounds took 86 s of the lib's 150.
        let rounds = if cfg!(miri) { 4 } else { 300 };
        for round in 0..rounds {
            let pages = 1 + (xorshift(&mut seed) % 700) as usize;
            let base_word = xorshift(&mut seed) % 4;
            let mut owned = Owned::new(pages);
            let mut map = owned.map(base_word);
            let density = xorshift(&mut seed) % 100;
            for bit in 0..pages {
                if xorshift(&mut seed) % 100 >= density {
                    map.set(bit, 1, true);
                }
            }
            assert!(map.summaries_agree(), "round {round}");
            for _ in 0..20 {
                let count = 1 + (xorshift(&mut seed) % 140) as usize;
                let align = 1 << (xorshift(&mut seed) % 9);
                let limit = (xorshift(&mut seed) as usize % (pages + 64)).max(1);
                let req = Request { count, align, limit };
                let found = map.find(req);
                assert_eq!(found, first_fit_by_scan(&map, req, base_word), "round {round}: {req:?}");
                // Take what was found, and free something, as an allocator would.
                if let Some(bit) = found {
                    map.set(bit, count, false);
                }
                let from = xorshift(&mut seed) as usize % pages;
                let len = (xorshift(&mut seed) as usize % 40).min(pages - from);
                map.set(from, len, true);
                assert!(map.summaries_agree(), "round {round}");
            }
        }
    }

    #[test]
    fn set_and_clear_keep_summaries_in_step() {
        let mut owned = Owned::new(64 * 64 * 3);
        let mut map = owned.map(0);
        map.set(5, 5000, true);
        assert!(map.summaries_agree());
        map.set(70, 130, false);
        map.set(4096, 1, false);
        assert!(map.summaries_agree());
        assert_eq!(map.count_free(), 5000 - 131);
        assert_eq!(map.largest_run(), 4096 - 200);
        map.set(70, 130, true);
        map.set(4096, 1, true);
        assert_eq!(map.largest_run(), 5000);
        assert!(map.summaries_agree());
    }

    #[test]
    fn both_single_page_frees_keep_summaries_in_step() {
        let pages = if cfg!(miri) { 64 * 16 } else { 64 * 64 * 3 };
        let mut owned = Owned::new(pages);
        let mut map = owned.map(0);
        let mut state = 7;
        let mut order: Vec<usize> = (0..pages).collect();
        for i in (1..pages).rev() {
            order.swap(i, (xorshift(&mut state) % (i as u64 + 1)) as usize);
        }
        // Every page freed in random order, alternately alone and as one
        // of many, with searches in between (which settle the stale word).
        for (n, &bit) in order.iter().enumerate() {
            if n % 2 == 0 {
                map.set(bit, 1, true);
            } else {
                map.free_one_of_many(bit);
            }
            if n % 97 == 0 {
                assert!(map.summaries_agree(), "after {n} frees");
                let req = Request {
                    count: 1 + n % 9,
                    align: 1,
                    limit: pages,
                };
                assert_eq!(map.find(req), first_fit_by_scan(&map, req, 0), "after {n} frees");
            }
        }
        assert!(map.summaries_agree());
        assert_eq!(map.count_free(), pages);
        assert_eq!(map.largest_run(), pages);
    }

    /// Marks `percent_used` percent of the map at random, leaving free pages.
    fn random_map(owned: &mut Owned, pages: usize, percent_used: u64) -> FreeMap<'_> {
        let mut map = owned.map(0);
        let mut seed = 0x2545_F491_4F6C_DD1D;
        for word in 0..pages / BITS {
            let mut free = 0;
            for bit in 0..BITS {
                if xorshift(&mut seed) % 100 >= percent_used {
                    free |= 1 << bit;
                }
            }
            map.store(word, free);
        }
        map
    }

    /// Words read by the search, at most: once with the cursors where the
    /// map left them, once with them forgotten (the summaries alone).
    fn reads_of(map: &mut FreeMap, req: Request) -> u64 {
        let mut most = 0;
        for cold in [false, true] {
            if cold {
                map.cursor = [0; ORDERS];
            }
            let before = map.words_read();
            assert!(map.find(req).is_some());
            most = most.max(map.words_read() - before);
        }
        most
    }

    /// At 1 GiB and at 64 GiB: a map made by `fill`, then the words one
    /// search for `count` pages aligned to `count` reads, at most 8.
    fn assert_bounded_search(count: usize, fill: impl Fn(&mut Owned, usize) -> FreeMap<'_>) {
        for pages in [1 << 18, 1 << 24] {
            let mut owned = Owned::new(pages);
            let mut map = fill(&mut owned, pages);
            let reads = reads_of(
                &mut map,
                Request {
                    count,
                    align: count,
                    limit: pages,
                },
            );
            assert!(reads <= 8, "{pages} pages: {reads} words read");
        }
    }

    #[test]
    fn a_run_taken_and_freed_again_flips_no_summary() {
        // Two summary levels; one under Miri, where every step is slow.
        let pages = if cfg!(miri) { 64 * 64 } else { 64 * 64 * 4 };
        for (count, used_percent) in [(8, 50), (1, 90), (3, 70)] {
            let mut owned = Owned::new(pages);
            let mut map = random_map(&mut owned, pages, used_percent);
            let req = Request {
                count,
                align: count.next_power_of_two(),
                limit: pages,
            };
            let first = map.find(req);
            let mut flips_after_first_pair = 0;
            for pair in 0..if cfg!(miri) { 4 } else { 50 } {
                let bit = map.find(req);
                assert_eq!(bit, first, "first fit by lowest address, every time");
                let bit = bit.unwrap();
                map.set(bit, count, false);
                assert!(map.summaries_agree());
                map.set(bit, count, true);
                assert!(map.summaries_agree());
                if pair == 0 {
                    flips_after_first_pair = map.flips;
                }
            }
            assert_eq!(
                map.flips, flips_after_first_pair,
                "{count} pages at {used_percent}% used"
            );
            // A search of another order settles only its own order.
            let other = Request {
                count: 64,
                align: 64,
                limit: pages,
            };
            assert_eq!(map.find(other), first_fit_by_scan(&map, other, 0));
            assert!(map.summaries_agree());
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "1 GiB and 64 GiB bitmaps: too big for Miri")]
    fn single_page_search_at_90_percent_reads_a_few_words_at_1_gib_and_64_gib() {
        assert_bounded_search(1, |owned, pages| random_map(owned, pages, 90));
    }

    #[test]
    #[cfg_attr(miri, ignore = "1 GiB and 64 GiB bitmaps: too big for Miri")]
    fn single_page_search_with_free_pages_only_at_the_end_stays_bounded() {
        assert_bounded_search(1, |owned, pages| {
            let mut map = owned.map(0);
            map.set(pages - pages / 10, pages / 10, true);
            map
        });
    }

    #[test]
    #[cfg_attr(miri, ignore = "1 GiB and 64 GiB bitmaps: too big for Miri")]
    fn aligned_eight_page_search_at_50_percent_reads_a_few_words_at_1_gib_and_64_gib() {
        assert_bounded_search(8, |owned, pages| random_map(owned, pages, 50));
    }
}
