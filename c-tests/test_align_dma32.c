/* page_alloc_aligned and PAGE_ALLOC_DMA32 against real physical addresses:
 * kernel regions [1 MiB, 17 MiB) and [4 GiB - 8 MiB, 4 GiB + 8 MiB), and a
 * user region [4 GiB + 16 MiB, 4 GiB + 32 MiB) wholly above 4 GiB. */
#include "testmem.h"

static uint64_t low_first, high_first;

static int setup(void **state) {
  (void)state;
  testmem_init();
  low_first = testmem_add_region(MIB(1), MIB(17), PAGE_POOL_KERNEL);
  high_first = testmem_add_region(GIB(4) - MIB(8), GIB(4) + MIB(8), PAGE_POOL_KERNEL);
  testmem_add_region(GIB(4) + MIB(16), GIB(4) + MIB(32), PAGE_POOL_USER);
  return 0;
}

static uint64_t round_up(uint64_t x, uint64_t to) { return (x + to - 1) / to * to; }

/* Takes every free page of the low region (one block). */
static void *fill_low_region(void) {
  void *all = page_alloc((MIB(17) - low_first) / PAGE, 0);
  assert_non_null(all);
  assert_int_equal(page_to_pa(all), low_first);
  return all;
}

static void aligned_block_is_the_lowest_physical_multiple_of_the_alignment(void **state) {
  (void)state;
  for (size_t align = 1; align <= 512; align *= 2) {
    for (size_t count = 1; count <= 3; count++) {
      void *p = page_alloc_aligned(count, align, 0);
      assert_non_null(p);
      uint64_t pa = page_to_pa(p);
      assert_int_equal(pa % (align * PAGE), 0);
      assert_int_equal(pa, round_up(low_first, align * PAGE));
      assert_int_equal(page_block_pages(p), count);
      assert_status(page_free(p), PAGE_OK);
    }
  }
}

static void alignment_skips_taken_pages_to_the_next_multiple(void **state) {
  (void)state;
  void *a = page_alloc_aligned(1, 8, 0);
  void *b = page_alloc_aligned(1, 8, 0);
  void *c = page_alloc(1, 0);
  assert_non_null(a);
  assert_non_null(b);
  assert_non_null(c);
  assert_int_equal(page_to_pa(b), page_to_pa(a) + 8 * PAGE);
  assert_int_equal(page_to_pa(c), low_first); /* unaligned requests fill the gap below */
  assert_status(page_free(a), PAGE_OK);
  assert_status(page_free(b), PAGE_OK);
  assert_status(page_free(c), PAGE_OK);
}

static void alignments_above_one_bitmap_word_are_physical(void **state) {
  (void)state;
  /* 4 MiB, 8 MiB, 16 MiB physical alignment. */
  void *p4 = page_alloc_aligned(3, 1024, 0);
  assert_non_null(p4);
  assert_int_equal(page_to_pa(p4), MIB(4));
  void *p8 = page_alloc_aligned(300, 2048, 0);
  assert_non_null(p8);
  assert_int_equal(page_to_pa(p8), MIB(8));
  void *p16 = page_alloc_aligned(256, 4096, 0);
  assert_non_null(p16);
  assert_int_equal(page_to_pa(p16), MIB(16));
  /* 257 pages from 16 MiB would pass the region's end: the next 16 MiB
   * multiple is 4 GiB, in the high region. */
  void *at4g = page_alloc_aligned(257, 4096, 0);
  assert_non_null(at4g);
  assert_int_equal(page_to_pa(at4g), GIB(4));
  assert_status(page_free(p4), PAGE_OK);
  assert_status(page_free(p8), PAGE_OK);
  assert_status(page_free(p16), PAGE_OK);
  assert_status(page_free(at4g), PAGE_OK);
}

static void alignment_of_4_gib_finds_the_page_at_4_gib(void **state) {
  (void)state;
  void *p = page_alloc_aligned(2, (size_t)1 << 20, 0);
  assert_non_null(p);
  assert_int_equal(page_to_pa(p), GIB(4));
  assert_status(page_free(p), PAGE_OK);
  /* That block cannot be DMA32. */
  EXPECT_ALLOC_ENOMEM(page_alloc_aligned(1, (size_t)1 << 20, PAGE_ALLOC_DMA32));
}

static void zero_or_non_power_of_two_alignment_is_einval(void **state) {
  (void)state;
  EXPECT_ALLOC_REFUSED(page_alloc_aligned(1, 0, 0), PAGE_EINVAL);
  EXPECT_ALLOC_REFUSED(page_alloc_aligned(1, 3, 0), PAGE_EINVAL);
  EXPECT_ALLOC_REFUSED(page_alloc_aligned(4, 6, PAGE_ALLOC_DMA32), PAGE_EINVAL);
  EXPECT_ALLOC_REFUSED(page_alloc_aligned(1, SIZE_MAX, 0), PAGE_EINVAL);
  EXPECT_ALLOC_REFUSED(page_alloc_aligned(1, ((size_t)1 << 40) + 1, 0), PAGE_EINVAL);
  void *p = page_alloc_aligned(1, 4, 0);
  assert_non_null(p);
  assert_status(page_free(p), PAGE_OK);
}

static void alignment_beyond_all_memory_is_enomem_not_a_crash(void **state) {
  (void)state;
  EXPECT_ALLOC_ENOMEM(page_alloc_aligned(1, (size_t)1 << 21, 0)); /* 8 GiB */
  EXPECT_ALLOC_ENOMEM(page_alloc_aligned(1, (size_t)1 << 40, 0));
  EXPECT_ALLOC_ENOMEM(page_alloc_aligned(1, (size_t)1 << 63, 0));
  EXPECT_ALLOC_ENOMEM(page_alloc_aligned(4, (size_t)1 << 63, PAGE_ALLOC_USER));
}

static void dma32_block_lies_wholly_below_4_gib(void **state) {
  (void)state;
  void *low = fill_low_region();
  void *d = page_alloc(16, PAGE_ALLOC_DMA32);
  assert_non_null(d);
  assert_int_equal(page_to_pa(d), high_first);
  assert_true(page_to_pa(d) + 16 * PAGE <= GIB(4));
  void *big = page_alloc((GIB(4) - high_first) / PAGE - 16, PAGE_ALLOC_DMA32);
  assert_non_null(big);
  assert_int_equal(page_to_pa(big) + page_block_pages(big) * PAGE, GIB(4));
  EXPECT_ALLOC_ENOMEM(page_alloc(1, PAGE_ALLOC_DMA32));
  /* Without DMA32 the pages above 4 GiB are there. */
  void *above = page_alloc(1, 0);
  assert_non_null(above);
  assert_int_equal(page_to_pa(above), GIB(4));
  assert_status(page_free(above), PAGE_OK);
  assert_status(page_free(big), PAGE_OK);
  assert_status(page_free(d), PAGE_OK);
  assert_status(page_free(low), PAGE_OK);
}

static void block_may_straddle_4_gib_without_dma32_but_never_with_it(void **state) {
  (void)state;
  void *low = fill_low_region();
  /* Leave exactly two free pages below 4 GiB. */
  size_t below = (GIB(4) - high_first) / PAGE;
  assert_status(page_alloc_at(high_first, below - 2, 0), PAGE_OK);
  void *rest = page_from_pa(high_first);
  EXPECT_ALLOC_ENOMEM(page_alloc(4, PAGE_ALLOC_DMA32));
  EXPECT_ALLOC_ENOMEM(page_alloc(3, PAGE_ALLOC_DMA32 | PAGE_ALLOC_ZERO));
  /* A block ending exactly at 4 GiB is DMA32. */
  void *two = page_alloc(2, PAGE_ALLOC_DMA32);
  assert_non_null(two);
  assert_int_equal(page_to_pa(two), GIB(4) - 2 * PAGE);
  assert_status(page_free(two), PAGE_OK);
  /* Without DMA32 the lowest 4-page block crosses 4 GiB. */
  void *across = page_alloc(4, PAGE_ALLOC_ZERO);
  assert_non_null(across);
  assert_int_equal(page_to_pa(across), GIB(4) - 2 * PAGE);
  assert_status(page_free(across), PAGE_OK);
  assert_status(page_free(rest), PAGE_OK);
  assert_status(page_free(low), PAGE_OK);
}

static void dma32_with_alignment_respects_both(void **state) {
  (void)state;
  void *low = fill_low_region();
  void *p = page_alloc_aligned(8, 64, PAGE_ALLOC_DMA32);
  assert_non_null(p);
  uint64_t pa = page_to_pa(p);
  assert_int_equal(pa % (64 * PAGE), 0);
  assert_true(pa >= high_first && pa + 8 * PAGE <= GIB(4));
  assert_int_equal(pa, round_up(high_first, 64 * PAGE));
  /* 512-page (2 MiB) alignment: 4 GiB - 8 MiB is a multiple, but it is
   * metadata; the next ones are 4 GiB - 6, -4, -2 MiB. */
  void *q = page_alloc_aligned(512, 512, PAGE_ALLOC_DMA32);
  assert_non_null(q);
  assert_int_equal(page_to_pa(q), GIB(4) - MIB(6));
  assert_status(page_free(q), PAGE_OK);
  assert_status(page_free(p), PAGE_OK);
  assert_status(page_free(low), PAGE_OK);
}

static void dma32_user_allocation_fails_when_the_user_pool_is_above_4_gib(void **state) {
  (void)state;
  EXPECT_ALLOC_ENOMEM(page_alloc(1, PAGE_ALLOC_USER | PAGE_ALLOC_DMA32));
  void *u = page_alloc(1, PAGE_ALLOC_USER);
  assert_non_null(u);
  assert_true(page_to_pa(u) > GIB(4) + MIB(16));
  assert_status(page_free(u), PAGE_OK);
}

static void dma32_alloc_at_must_end_at_or_below_4_gib(void **state) {
  (void)state;
  assert_status(page_alloc_at(GIB(4) - 2 * PAGE, 2, PAGE_ALLOC_DMA32), PAGE_OK);
  assert_status(page_free(page_from_pa(GIB(4) - 2 * PAGE)), PAGE_OK);
  EXPECT_REFUSED(page_alloc_at(GIB(4) - 2 * PAGE, 3, PAGE_ALLOC_DMA32), PAGE_EINVAL,
                 page_from_pa(GIB(4) - 2 * PAGE));
  EXPECT_REFUSED(page_alloc_at(GIB(4), 1, PAGE_ALLOC_DMA32), PAGE_EINVAL, page_from_pa(GIB(4)));
  /* Without DMA32 the same straddling range is fine. */
  assert_status(page_alloc_at(GIB(4) - 2 * PAGE, 3, 0), PAGE_OK);
  assert_int_equal(page_block_pages(page_from_pa(GIB(4) - 2 * PAGE)), 3);
  assert_status(page_free(page_from_pa(GIB(4) - 2 * PAGE)), PAGE_OK);
}

int main(void) {
#define T(f) cmocka_unit_test_teardown(f, tm_teardown_all_free)
  const struct CMUnitTest tests[] = {
      T(aligned_block_is_the_lowest_physical_multiple_of_the_alignment),
      T(alignment_skips_taken_pages_to_the_next_multiple),
      T(alignments_above_one_bitmap_word_are_physical),
      T(alignment_of_4_gib_finds_the_page_at_4_gib),
      T(zero_or_non_power_of_two_alignment_is_einval),
      T(alignment_beyond_all_memory_is_enomem_not_a_crash),
      T(dma32_block_lies_wholly_below_4_gib),
      T(block_may_straddle_4_gib_without_dma32_but_never_with_it),
      T(dma32_with_alignment_respects_both),
      T(dma32_user_allocation_fails_when_the_user_pool_is_above_4_gib),
      T(dma32_alloc_at_must_end_at_or_below_4_gib),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
