/* page_alloc: placement, contents, accounting, exhaustion and refusals.
 * Kernel region [1 MiB, 17 MiB), user region [32 MiB, 36 MiB). */
#include "testmem.h"

static uint64_t kernel_first; /* first usable physical page of the kernel region */
static uint64_t user_first;

static int setup(void **state) {
  (void)state;
  testmem_init();
  kernel_first = testmem_add_region(MIB(1), MIB(17), PAGE_POOL_KERNEL);
  user_first = testmem_add_region(MIB(32), MIB(36), PAGE_POOL_USER);
  return 0;
}

static uint64_t kernel_free(void) {
  page_stats s = stats_now();
  return s.free_pages - s.user_free_pages;
}

static void single_page_is_the_lowest_usable_page_aligned_and_writable(void **state) {
  (void)state;
  void *p = page_alloc(1, 0);
  assert_non_null(p);
  assert_int_equal((uintptr_t)p % PAGE, 0);
  assert_int_equal(page_to_pa(p), kernel_first);
  assert_ptr_equal(p, testmem_kva(kernel_first));
  memset(p, 0xAB, PAGE);
  assert_int_equal(((unsigned char *)p)[PAGE - 1], 0xAB);
  assert_status(page_free(p), PAGE_OK);
}

static void new_block_has_one_reference_and_knows_its_length(void **state) {
  (void)state;
  void *p = page_alloc(5, 0);
  assert_non_null(p);
  assert_int_equal(page_refcount(p), 1);
  assert_int_equal(page_block_pages(p), 5);
  for (size_t i = 1; i < 5; i++) {
    assert_int_equal(page_refcount(page_n(p, i)), 0);
    assert_int_equal(page_block_pages(page_n(p, i)), 0);
  }
  assert_status(page_free(p), PAGE_OK);
  assert_int_equal(page_refcount(p), 0);
  assert_int_equal(page_block_pages(p), 0);
}

static void multi_page_block_is_physically_contiguous_and_counted(void **state) {
  (void)state;
  page_stats before = stats_now();
  void *p = page_alloc(37, 0);
  assert_non_null(p);
  uint64_t pa = page_to_pa(p);
  for (size_t i = 0; i < 37; i++) {
    assert_int_equal(page_to_pa(page_n(p, i)), pa + i * PAGE);
    memset(page_n(p, i), (int)i, PAGE);
  }
  page_stats after = stats_now();
  assert_int_equal(after.used_pages, before.used_pages + 37);
  assert_int_equal(after.free_pages, before.free_pages - 37);
  assert_true(after.high_water_pages >= 37);
  assert_status(page_free(p), PAGE_OK);
  page_stats end = stats_now();
  assert_int_equal(end.free_pages, before.free_pages);
  assert_int_equal(end.high_water_pages, after.high_water_pages);
}

static void zero_flag_zero_fills_a_previously_dirtied_block(void **state) {
  (void)state;
  unsigned char *p = page_alloc(4, 0);
  assert_non_null(p);
  memset(p, 0xCC, 4 * PAGE);
  uint64_t pa = page_to_pa(p);
  assert_status(page_free(p), PAGE_OK);
  unsigned char *q = page_alloc(4, PAGE_ALLOC_ZERO);
  assert_non_null(q);
  assert_int_equal(page_to_pa(q), pa); /* the same pages came back */
  for (size_t i = 0; i < 4 * PAGE; i++)
    if (q[i] != 0) fail_msg("byte %zu of a PAGE_ALLOC_ZERO block is 0x%02x", i, q[i]);
  assert_status(page_free(q), PAGE_OK);
}

static void allocations_do_not_overlap_and_the_lowest_freed_page_is_reused(void **state) {
  (void)state;
  void *a = page_alloc(1, 0), *b = page_alloc(3, 0), *c = page_alloc(1, 0);
  assert_non_null(a);
  assert_non_null(b);
  assert_non_null(c);
  assert_int_equal(page_to_pa(b), page_to_pa(a) + PAGE);
  assert_int_equal(page_to_pa(c), page_to_pa(b) + 3 * PAGE);
  assert_status(page_free(b), PAGE_OK);
  void *d = page_alloc(2, 0);
  assert_ptr_equal(d, b);
  void *e = page_alloc(2, 0); /* one page left in b's hole: too small */
  assert_int_equal(page_to_pa(e), page_to_pa(c) + PAGE);
  void *f = page_alloc(1, 0);
  assert_ptr_equal(f, page_n(b, 2));
  assert_status(page_free(a), PAGE_OK);
  assert_status(page_free(c), PAGE_OK);
  assert_status(page_free(d), PAGE_OK);
  assert_status(page_free(e), PAGE_OK);
  assert_status(page_free(f), PAGE_OK);
}

static void exhaustion_returns_null_counts_failed_alloc_and_is_not_misuse(void **state) {
  (void)state;
  uint64_t n = kernel_free();
  void *all = page_alloc(n, 0);
  assert_non_null(all);
  assert_int_equal(kernel_free(), 0);
  EXPECT_ALLOC_ENOMEM(page_alloc(1, 0));
  EXPECT_ALLOC_ENOMEM(page_alloc(1, PAGE_ALLOC_ZERO));
  EXPECT_ALLOC_ENOMEM(page_alloc_aligned(1, 1, PAGE_ALLOC_DMA32));
  assert_status(page_free(all), PAGE_OK);
  /* The same allocation is possible again. */
  void *one = page_alloc(1, 0);
  assert_int_equal(page_to_pa(one), kernel_first);
  assert_status(page_free(one), PAGE_OK);
}

static void request_longer_than_any_free_run_is_enomem_despite_free_pages(void **state) {
  (void)state;
  uint64_t n = kernel_free();
  void *half = page_alloc(n / 2, 0);
  void *pin = page_alloc(1, 0);
  assert_non_null(half);
  assert_non_null(pin);
  assert_status(page_free(half), PAGE_OK);
  uint64_t longest = n - n / 2 - 1 > n / 2 ? n - n / 2 - 1 : n / 2;
  assert_int_equal(stats_now().largest_free_run, longest);
  assert_int_equal(kernel_free(), n - 1);
  EXPECT_ALLOC_ENOMEM(page_alloc(longest + 1, 0));
  void *fits = page_alloc(longest, 0);
  assert_non_null(fits);
  assert_status(page_free(fits), PAGE_OK);
  assert_status(page_free(pin), PAGE_OK);
  assert_int_equal(stats_now().largest_free_run, n);
}

static void zero_count_is_einval_reported_with_null(void **state) {
  (void)state;
  EXPECT_ALLOC_REFUSED(page_alloc(0, 0), PAGE_EINVAL);
  EXPECT_ALLOC_REFUSED(page_alloc(0, PAGE_ALLOC_ZERO | PAGE_ALLOC_USER), PAGE_EINVAL);
  EXPECT_ALLOC_REFUSED(page_alloc_aligned(0, 8, 0), PAGE_EINVAL);
  void *p = page_alloc(1, 0);
  assert_non_null(p);
  assert_status(page_free(p), PAGE_OK);
}

static void unknown_flag_bits_are_einval_reported_with_null(void **state) {
  (void)state;
  EXPECT_ALLOC_REFUSED(page_alloc(1, 16), PAGE_EINVAL);
  EXPECT_ALLOC_REFUSED(page_alloc(1, 0x80000000u), PAGE_EINVAL);
  EXPECT_ALLOC_REFUSED(page_alloc(1, PAGE_ALLOC_ZERO | 0x100), PAGE_EINVAL);
  EXPECT_ALLOC_REFUSED(page_alloc_aligned(1, 1, UINT32_MAX & ~(uint32_t)PAGE_ALLOC_ASSERT), PAGE_EINVAL);
  void *p = page_alloc(1, PAGE_ALLOC_ZERO | PAGE_ALLOC_DMA32);
  assert_non_null(p);
  assert_status(page_free(p), PAGE_OK);
}

static void absurd_counts_are_enomem_not_misuse(void **state) {
  (void)state;
  EXPECT_ALLOC_ENOMEM(page_alloc(SIZE_MAX, 0));
  EXPECT_ALLOC_ENOMEM(page_alloc(SIZE_MAX, PAGE_ALLOC_ZERO));
  EXPECT_ALLOC_ENOMEM(page_alloc((size_t)1 << 40, 0));
  EXPECT_ALLOC_ENOMEM(page_alloc((size_t)PAGE_REFCOUNT_MAX + 1, 0));
  EXPECT_ALLOC_ENOMEM(page_alloc(kernel_free() + 1, 0));
}

static void user_flag_draws_only_from_the_user_pool(void **state) {
  (void)state;
  page_stats s = stats_now();
  uint64_t user = s.user_free_pages;
  assert_int_equal(user, (MIB(36) - user_first) / PAGE);
  void *u = page_alloc(user, PAGE_ALLOC_USER);
  assert_non_null(u);
  assert_int_equal(page_to_pa(u), user_first);
  assert_int_equal(stats_now().user_free_pages, 0);
  EXPECT_ALLOC_ENOMEM(page_alloc(1, PAGE_ALLOC_USER));
  /* The kernel pool is untouched by that and by the failure. */
  void *k = page_alloc(1, 0);
  assert_non_null(k);
  assert_int_equal(page_to_pa(k), kernel_first);
  assert_status(page_free(u), PAGE_OK);
  assert_status(page_free(k), PAGE_OK);
  /* A kernel allocation never takes user pages, even when the kernel pool is out. */
  void *all = page_alloc(kernel_free(), 0);
  assert_non_null(all);
  EXPECT_ALLOC_ENOMEM(page_alloc(1, 0));
  assert_int_equal(stats_now().user_free_pages, user);
  void *u2 = page_alloc(1, PAGE_ALLOC_USER | PAGE_ALLOC_DMA32 | PAGE_ALLOC_ZERO);
  assert_non_null(u2);
  assert_int_equal(page_to_pa(u2), user_first);
  assert_status(page_free(u2), PAGE_OK);
  assert_status(page_free(all), PAGE_OK);
}

static void many_single_pages_fill_the_region_in_address_order(void **state) {
  (void)state;
  uint64_t n = kernel_free();
  static void *pages[8192];
  assert_true(n <= 8192);
  for (uint64_t i = 0; i < n; i++) {
    pages[i] = page_alloc(1, 0);
    assert_non_null(pages[i]);
    assert_int_equal(page_to_pa(pages[i]), kernel_first + i * PAGE);
  }
  EXPECT_ALLOC_ENOMEM(page_alloc(1, 0));
  assert_int_equal(stats_now().largest_free_run, stats_now().user_free_pages);
  /* Free every other page, then the rest: runs coalesce back to one. */
  for (uint64_t i = 0; i < n; i += 2) assert_status(page_free(pages[i]), PAGE_OK);
  EXPECT_ALLOC_ENOMEM(page_alloc(2, 0));
  for (uint64_t i = 1; i < n; i += 2) assert_status(page_free(pages[i]), PAGE_OK);
  assert_int_equal(stats_now().largest_free_run, n);
}

int main(void) {
#define T(f) cmocka_unit_test_teardown(f, tm_teardown_all_free)
  const struct CMUnitTest tests[] = {
      T(single_page_is_the_lowest_usable_page_aligned_and_writable),
      T(new_block_has_one_reference_and_knows_its_length),
      T(multi_page_block_is_physically_contiguous_and_counted),
      T(zero_flag_zero_fills_a_previously_dirtied_block),
      T(allocations_do_not_overlap_and_the_lowest_freed_page_is_reused),
      T(exhaustion_returns_null_counts_failed_alloc_and_is_not_misuse),
      T(request_longer_than_any_free_run_is_enomem_despite_free_pages),
      T(zero_count_is_einval_reported_with_null),
      T(unknown_flag_bits_are_einval_reported_with_null),
      T(absurd_counts_are_enomem_not_misuse),
      T(user_flag_draws_only_from_the_user_pool),
      T(many_single_pages_fill_the_region_in_address_order),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
