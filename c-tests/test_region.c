/* page_region_add: counters, rounding, refusals, metadata pages, pools,
 * address order. One allocator for the file; each case uses its own
 * physical range, and frees what it allocates. */
#include "testmem.h"

static int setup(void **state) {
  (void)state;
  testmem_init();
  testmem_add_region(MIB(1), MIB(17), PAGE_POOL_KERNEL);
  return 0;
}

#define PA(x) ((const void *)(uintptr_t)(x))

static void region_add_counts_pages_metadata_and_free_pages(void **state) {
  (void)state;
  page_stats before = stats_now();
  misuse_reset();
  testmem_add_region(MIB(32), MIB(48), PAGE_POOL_KERNEL);
  assert_no_misuse();
  page_stats after = stats_now();
  uint64_t total = MIB(16) / PAGE;
  uint64_t meta = after.metadata_pages - before.metadata_pages;
  uint64_t bytes = after.metadata_bytes - before.metadata_bytes;
  assert_int_equal(after.total_pages - before.total_pages, total);
  assert_int_equal(after.regions, before.regions + 1);
  assert_true(meta >= 1 && meta <= 8);
  /* The metadata pages are exactly what its bytes need. */
  assert_int_equal(meta, (bytes + PAGE - 1) / PAGE);
  /* About 4.13 bytes per page plus a header. */
  assert_true(bytes >= 4 * total && bytes <= 4 * total + total / 4 + 512);
  assert_int_equal(after.free_pages, before.free_pages + total - meta);
  assert_int_equal(after.free_pages, after.total_pages - after.metadata_pages - after.used_pages);
  assert_true(after.largest_free_run >= total - meta);
  assert_int_equal(after.user_free_pages, before.user_free_pages);
  assert_healthy();
  /* The first usable page is the one right after the metadata. */
  assert_status(page_alloc_at(MIB(32) + meta * PAGE, 1, 0), PAGE_OK);
  assert_status(page_free(page_from_pa(MIB(32) + meta * PAGE)), PAGE_OK);
}

static void region_bounds_are_rounded_inward_to_whole_pages(void **state) {
  (void)state;
  uint64_t base = MIB(64);
  page_stats before = stats_now();
  testmem_add_region(base + 1, base + 64 * PAGE + PAGE - 1, PAGE_POOL_KERNEL);
  page_stats after = stats_now();
  assert_int_equal(after.total_pages - before.total_pages, 63);
  /* The partial pages at both ends stay outside: a neighbour may take them. */
  testmem_add_region(base - 4 * PAGE, base + PAGE, PAGE_POOL_KERNEL);
  testmem_add_region(base + 64 * PAGE, base + 72 * PAGE, PAGE_POOL_KERNEL);
  assert_int_equal(stats_now().total_pages - before.total_pages, 63 + 5 + 8);
  /* The last whole page of the rounded region is usable. */
  assert_status(page_alloc_at(base + 63 * PAGE, 1, 0), PAGE_OK);
  void *last = page_from_pa(base + 63 * PAGE);
  assert_int_equal(page_refcount(last), 1);
  assert_status(page_free(last), PAGE_OK);
  assert_healthy();
}

static void blocks_never_span_two_adjacent_regions(void **state) {
  (void)state;
  /* Two adjacent user regions of 8 pages each (one metadata page each):
   * physically contiguous, but every block lies in one region. */
  uint64_t a = MIB(120), b = MIB(120) + 8 * PAGE;
  testmem_add_region(a, b, PAGE_POOL_USER);
  testmem_add_region(b, b + 8 * PAGE, PAGE_POOL_USER);
  EXPECT_REFUSED(page_alloc_at(b - 2 * PAGE, 4, PAGE_ALLOC_USER), PAGE_ENOTMANAGED, page_from_pa(b - 2 * PAGE));
  EXPECT_REFUSED(page_alloc_at(b - PAGE, 2, PAGE_ALLOC_USER), PAGE_ENOTMANAGED, page_from_pa(b - PAGE));
  /* The second region's first page is its metadata, not a usable page. */
  EXPECT_REFUSED(page_alloc_at(b, 1, PAGE_ALLOC_USER), PAGE_ENOTMANAGED, page_from_pa(b));
  void *first = page_alloc(7, PAGE_ALLOC_USER);
  assert_non_null(first);
  assert_int_equal(page_to_pa(first), a + PAGE);
  void *second = page_alloc(7, PAGE_ALLOC_USER);
  assert_non_null(second);
  assert_int_equal(page_to_pa(second), b + PAGE);
  assert_status(page_free(first), PAGE_OK);
  assert_status(page_free(second), PAGE_OK);
}

static void empty_range_is_einval_and_changes_nothing(void **state) {
  (void)state;
  EXPECT_REFUSED(page_region_add(MIB(200), MIB(200), PAGE_POOL_KERNEL), PAGE_EINVAL, PA(MIB(200)));
  EXPECT_REFUSED(page_region_add(0, 0, PAGE_POOL_USER), PAGE_EINVAL, NULL);
  /* The range is still free to add. */
  testmem_add_region(MIB(200), MIB(201), PAGE_POOL_KERNEL);
}

static void reversed_range_is_einval_and_changes_nothing(void **state) {
  (void)state;
  EXPECT_REFUSED(page_region_add(MIB(210), MIB(209), PAGE_POOL_KERNEL), PAGE_EINVAL, PA(MIB(210)));
  testmem_add_region(MIB(209), MIB(210), PAGE_POOL_KERNEL);
}

static void address_beyond_2_pow_52_is_einval(void **state) {
  (void)state;
  uint64_t top = (uint64_t)1 << 52;
  EXPECT_REFUSED(page_region_add(top, top + MIB(1), PAGE_POOL_KERNEL), PAGE_EINVAL, PA(top));
  EXPECT_REFUSED(page_region_add(MIB(220), top + PAGE, PAGE_POOL_KERNEL), PAGE_EINVAL, PA(MIB(220)));
  /* The end is exclusive, but it too must be below 2^52. */
  EXPECT_REFUSED(page_region_add(top - MIB(1), top, PAGE_POOL_KERNEL), PAGE_EINVAL, PA(top - MIB(1)));
  EXPECT_REFUSED(page_region_add(UINT64_MAX - PAGE, UINT64_MAX, PAGE_POOL_KERNEL), PAGE_EINVAL,
                 PA(UINT64_MAX - PAGE));
}

static void unknown_pool_is_einval_and_changes_nothing(void **state) {
  (void)state;
  EXPECT_REFUSED(page_region_add(MIB(230), MIB(231), 2), PAGE_EINVAL, PA(MIB(230)));
  EXPECT_REFUSED(page_region_add(MIB(230), MIB(231), UINT32_MAX), PAGE_EINVAL, PA(MIB(230)));
  testmem_add_region(MIB(230), MIB(231), PAGE_POOL_USER);
}

static void overlapping_region_is_eoverlap_and_changes_nothing(void **state) {
  (void)state;
  /* [1 MiB, 17 MiB) is there since setup. */
  EXPECT_REFUSED(page_region_add(MIB(16), MIB(18), PAGE_POOL_KERNEL), PAGE_EOVERLAP, PA(MIB(16)));
  EXPECT_REFUSED(page_region_add(0, MIB(2), PAGE_POOL_KERNEL), PAGE_EOVERLAP, NULL);
  EXPECT_REFUSED(page_region_add(MIB(1), MIB(17), PAGE_POOL_KERNEL), PAGE_EOVERLAP, PA(MIB(1)));
  EXPECT_REFUSED(page_region_add(MIB(4), MIB(5), PAGE_POOL_USER), PAGE_EOVERLAP, PA(MIB(4)));
  EXPECT_REFUSED(page_region_add(0, GIB(4), PAGE_POOL_KERNEL), PAGE_EOVERLAP, NULL);
  /* Sharing only the last page is an overlap too. */
  EXPECT_REFUSED(page_region_add(MIB(17) - PAGE, MIB(18), PAGE_POOL_KERNEL), PAGE_EOVERLAP,
                 PA(MIB(17) - PAGE));
  /* Touching a partial page only (rounded away) is not. */
  testmem_add_region(KPALLOC_PAGE_SIZE * 192, MIB(1) + 100, PAGE_POOL_KERNEL);
  void *p = page_alloc(1, 0);
  assert_non_null(p);
  assert_status(page_free(p), PAGE_OK);
}

static void too_small_region_is_etoosmall_and_two_pages_are_enough(void **state) {
  (void)state;
  uint64_t base = MIB(240);
  EXPECT_REFUSED(page_region_add(base, base + PAGE, PAGE_POOL_KERNEL), PAGE_ETOOSMALL, PA(base));
  EXPECT_REFUSED(page_region_add(base + 1, base + PAGE - 1, PAGE_POOL_KERNEL), PAGE_ETOOSMALL,
                 PA(base + 1));
  EXPECT_REFUSED(page_region_add(base + 1, base + 2 * PAGE - 1, PAGE_POOL_KERNEL), PAGE_ETOOSMALL,
                 PA(base + 1));
  page_stats before = stats_now();
  testmem_add_region(base, base + 2 * PAGE, PAGE_POOL_KERNEL);
  page_stats after = stats_now();
  assert_int_equal(after.total_pages - before.total_pages, 2);
  assert_int_equal(after.metadata_pages - before.metadata_pages, 1);
  assert_int_equal(after.free_pages - before.free_pages, 1);
  assert_status(page_alloc_at(base + PAGE, 1, 0), PAGE_OK);
  assert_status(page_free(page_from_pa(base + PAGE)), PAGE_OK);
}

static void metadata_pages_cannot_be_freed_got_put_split_or_reserved(void **state) {
  (void)state;
  void *meta = page_from_pa(MIB(1));
  assert_int_equal(page_refcount(meta), 0);
  assert_int_equal(page_block_pages(meta), 0);
  EXPECT_REFUSED(page_free(meta), PAGE_ENOTMANAGED, meta);
  EXPECT_REFUSED(page_get(meta), PAGE_ENOTMANAGED, meta);
  EXPECT_REFUSED(page_put(meta), PAGE_ENOTMANAGED, meta);
  EXPECT_REFUSED(page_split(meta), PAGE_ENOTMANAGED, meta);
  EXPECT_REFUSED(page_alloc_at(MIB(1), 1, 0), PAGE_ENOTMANAGED, meta);
  /* A range starting in the metadata and reaching usable pages too. */
  EXPECT_REFUSED(page_alloc_at(MIB(1), 64, 0), PAGE_ENOTMANAGED, meta);
}

static void lower_region_added_later_is_allocated_from_first(void **state) {
  (void)state;
  void *before = page_alloc(1, 0);
  assert_non_null(before);
  assert_true(page_to_pa(before) >= KPALLOC_PAGE_SIZE * 192);
  testmem_add_region(KPALLOC_PAGE_SIZE * 16, KPALLOC_PAGE_SIZE * 48, PAGE_POOL_KERNEL);
  void *low = page_alloc(1, 0);
  assert_non_null(low);
  assert_true(page_to_pa(low) > KPALLOC_PAGE_SIZE * 16 && page_to_pa(low) < KPALLOC_PAGE_SIZE * 48);
  assert_true(page_to_pa(low) < page_to_pa(before));
  assert_status(page_free(low), PAGE_OK);
  assert_status(page_free(before), PAGE_OK);
  assert_healthy();
}

static void user_pool_region_serves_only_user_allocations(void **state) {
  (void)state;
  page_stats before = stats_now();
  testmem_add_region(MIB(96), MIB(100), PAGE_POOL_USER);
  page_stats after = stats_now();
  uint64_t usable = after.free_pages - before.free_pages;
  assert_int_equal(after.user_free_pages - before.user_free_pages, usable);
  /* The lowest user page: the other user region at 230 MiB is higher. */
  void *user = page_alloc(1, PAGE_ALLOC_USER);
  assert_non_null(user);
  assert_true(page_to_pa(user) > MIB(96) && page_to_pa(user) < MIB(100));
  assert_int_equal(stats_now().user_free_pages, after.user_free_pages - 1);
  void *kernel = page_alloc(1, 0);
  assert_non_null(kernel);
  assert_true(page_to_pa(kernel) < MIB(96) || page_to_pa(kernel) >= MIB(100));
  assert_int_equal(stats_now().user_free_pages, after.user_free_pages - 1);
  assert_status(page_free(user), PAGE_OK);
  assert_status(page_free(kernel), PAGE_OK);
  assert_int_equal(stats_now().user_free_pages, after.user_free_pages);
}

static void region_straddling_4_gib_is_added_whole(void **state) {
  (void)state;
  page_stats before = stats_now();
  testmem_add_region(GIB(4) - MIB(8), GIB(4) + MIB(8), PAGE_POOL_KERNEL);
  page_stats after = stats_now();
  assert_int_equal(after.total_pages - before.total_pages, MIB(16) / PAGE);
  assert_status(page_alloc_at(GIB(4), 1, 0), PAGE_OK);
  assert_status(page_alloc_at(GIB(4) - PAGE, 1, 0), PAGE_OK);
  assert_status(page_free(page_from_pa(GIB(4))), PAGE_OK);
  assert_status(page_free(page_from_pa(GIB(4) - PAGE)), PAGE_OK);
}

static void forty_small_regions_are_each_found_by_address(void **state) {
  (void)state;
  page_stats before = stats_now();
  uint64_t base = MIB(300);
  /* Added highest first, so every insertion goes to the front of the table. */
  for (int i = 39; i >= 0; i--)
    testmem_add_region(base + (uint64_t)i * 16 * PAGE, base + (uint64_t)(i + 1) * 16 * PAGE - 4 * PAGE,
                                  PAGE_POOL_KERNEL);
  page_stats after = stats_now();
  assert_int_equal(after.regions, before.regions + 40);
  assert_int_equal(after.total_pages - before.total_pages, 40 * 12);
  for (int i = 0; i < 40; i++) {
    uint64_t last = base + (uint64_t)(i + 1) * 16 * PAGE - 5 * PAGE;
    assert_status(page_alloc_at(last, 1, 0), PAGE_OK);
    /* The gap between regions is nobody's. */
    void *gap = page_from_pa(last + PAGE);
    EXPECT_REFUSED(page_free(gap), PAGE_ENOTMANAGED, gap);
  }
  assert_int_equal(stats_now().used_pages, 40);
  for (int i = 0; i < 40; i++)
    assert_status(page_free(page_from_pa(base + (uint64_t)(i + 1) * 16 * PAGE - 5 * PAGE)), PAGE_OK);
  assert_healthy();
}

int main(void) {
#define T(f) cmocka_unit_test_teardown(f, tm_teardown_all_free)
  const struct CMUnitTest tests[] = {
      T(region_add_counts_pages_metadata_and_free_pages),
      T(region_bounds_are_rounded_inward_to_whole_pages),
      T(blocks_never_span_two_adjacent_regions),
      T(empty_range_is_einval_and_changes_nothing),
      T(reversed_range_is_einval_and_changes_nothing),
      T(address_beyond_2_pow_52_is_einval),
      T(unknown_pool_is_einval_and_changes_nothing),
      T(overlapping_region_is_eoverlap_and_changes_nothing),
      T(too_small_region_is_etoosmall_and_two_pages_are_enough),
      T(metadata_pages_cannot_be_freed_got_put_split_or_reserved),
      T(lower_region_added_later_is_allocated_from_first),
      T(user_pool_region_serves_only_user_allocations),
      T(region_straddling_4_gib_is_added_whole),
      T(forty_small_regions_are_each_found_by_address),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
