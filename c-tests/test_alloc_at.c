/* page_alloc_at: reserving exact physical pages. Kernel region
 * [1 MiB, 17 MiB), user region [32 MiB, 36 MiB). Misuse is reported with
 * the kernel virtual address of the physical address passed. */
#include "testmem.h"

static uint64_t kernel_first, user_first;

static int setup(void **state) {
  (void)state;
  testmem_init();
  kernel_first = testmem_add_region(MIB(1), MIB(17), PAGE_POOL_KERNEL);
  user_first = testmem_add_region(MIB(32), MIB(36), PAGE_POOL_USER);
  return 0;
}

static void alloc_at_reserves_exactly_those_pages_with_one_reference(void **state) {
  (void)state;
  page_stats before = stats_now();
  misuse_reset();
  assert_status(page_alloc_at(MIB(2), 16, 0), PAGE_OK);
  assert_no_misuse();
  void *p = page_from_pa(MIB(2));
  assert_int_equal(page_refcount(p), 1);
  assert_int_equal(page_block_pages(p), 16);
  assert_int_equal(page_refcount(page_n(p, 15)), 0);
  page_stats after = stats_now();
  assert_int_equal(after.used_pages, before.used_pages + 16);
  assert_int_equal(after.free_pages, before.free_pages - 16);
  assert_healthy();
  memset(p, 0x11, 16 * PAGE);
  assert_status(page_free(p), PAGE_OK);
}

static void ordinary_allocations_skip_reserved_pages(void **state) {
  (void)state;
  assert_status(page_alloc_at(kernel_first, 2, 0), PAGE_OK);
  void *p = page_alloc(1, 0);
  assert_int_equal(page_to_pa(p), kernel_first + 2 * PAGE);
  assert_status(page_alloc_at(kernel_first + 4 * PAGE, 1, 0), PAGE_OK);
  void *q = page_alloc(2, 0); /* the one-page hole is too small */
  assert_int_equal(page_to_pa(q), kernel_first + 5 * PAGE);
  assert_status(page_free(page_from_pa(kernel_first)), PAGE_OK);
  assert_status(page_free(page_from_pa(kernel_first + 4 * PAGE)), PAGE_OK);
  assert_status(page_free(p), PAGE_OK);
  assert_status(page_free(q), PAGE_OK);
}

static void alloc_at_pages_in_use_is_ebusy_and_changes_nothing(void **state) {
  (void)state;
  assert_status(page_alloc_at(MIB(4), 4, 0), PAGE_OK);
  void *held = page_from_pa(MIB(4));
  /* The same, a partial overlap from below, from above, and an interior page. */
  EXPECT_REFUSED(page_alloc_at(MIB(4), 4, 0), PAGE_EBUSY, held);
  EXPECT_REFUSED(page_alloc_at(MIB(4) - 2 * PAGE, 3, 0), PAGE_EBUSY, page_from_pa(MIB(4) - 2 * PAGE));
  EXPECT_REFUSED(page_alloc_at(MIB(4) + 3 * PAGE, 8, 0), PAGE_EBUSY, page_from_pa(MIB(4) + 3 * PAGE));
  EXPECT_REFUSED(page_alloc_at(MIB(4) + PAGE, 1, 0), PAGE_EBUSY, page_from_pa(MIB(4) + PAGE));
  /* The free pages next to it were not taken by the refused calls. */
  assert_status(page_alloc_at(MIB(4) - 2 * PAGE, 2, 0), PAGE_OK);
  assert_status(page_alloc_at(MIB(4) + 4 * PAGE, 7, 0), PAGE_OK);
  assert_int_equal(page_block_pages(held), 4);
  assert_status(page_free(held), PAGE_OK);
  assert_status(page_free(page_from_pa(MIB(4) - 2 * PAGE)), PAGE_OK);
  assert_status(page_free(page_from_pa(MIB(4) + 4 * PAGE)), PAGE_OK);
}

static void alloc_at_outside_usable_pages_of_one_region_is_enotmanaged(void **state) {
  (void)state;
  EXPECT_REFUSED(page_alloc_at(MIB(1), 1, 0), PAGE_ENOTMANAGED, page_from_pa(MIB(1)));
  EXPECT_REFUSED(page_alloc_at(0, 1, 0), PAGE_ENOTMANAGED, page_from_pa(0));
  EXPECT_REFUSED(page_alloc_at(MIB(20), 1, 0), PAGE_ENOTMANAGED, page_from_pa(MIB(20)));
  EXPECT_REFUSED(page_alloc_at(MIB(17), 1, 0), PAGE_ENOTMANAGED, page_from_pa(MIB(17)));
  /* Running past the region's end. */
  EXPECT_REFUSED(page_alloc_at(MIB(17) - 2 * PAGE, 3, 0), PAGE_ENOTMANAGED,
                 page_from_pa(MIB(17) - 2 * PAGE));
  EXPECT_REFUSED(page_alloc_at(MIB(16), (size_t)1 << 30, 0), PAGE_ENOTMANAGED, page_from_pa(MIB(16)));
  /* Beyond the 52-bit physical address space. */
  EXPECT_REFUSED(page_alloc_at((uint64_t)1 << 52, 1, 0), PAGE_ENOTMANAGED,
                 page_from_pa((uint64_t)1 << 52));
  /* Exactly up to the end is fine. */
  assert_status(page_alloc_at(MIB(17) - 2 * PAGE, 2, 0), PAGE_OK);
  assert_status(page_free(page_from_pa(MIB(17) - 2 * PAGE)), PAGE_OK);
}

static void alloc_at_unaligned_address_or_zero_or_overlong_count_is_einval(void **state) {
  (void)state;
  EXPECT_REFUSED(page_alloc_at(MIB(2) + 1, 1, 0), PAGE_EINVAL, page_from_pa(MIB(2) + 1));
  EXPECT_REFUSED(page_alloc_at(MIB(2) + PAGE - 1, 1, 0), PAGE_EINVAL, page_from_pa(MIB(2) + PAGE - 1));
  EXPECT_REFUSED(page_alloc_at(MIB(2), 0, 0), PAGE_EINVAL, page_from_pa(MIB(2)));
  /* Longer than any block can be, whatever the regions. */
  EXPECT_REFUSED(page_alloc_at(MIB(2), (size_t)PAGE_REFCOUNT_MAX + 1, 0), PAGE_EINVAL, page_from_pa(MIB(2)));
  EXPECT_REFUSED(page_alloc_at(MIB(2), SIZE_MAX, 0), PAGE_EINVAL, page_from_pa(MIB(2)));
  assert_status(page_alloc_at(MIB(2), 1, 0), PAGE_OK);
  assert_status(page_free(page_from_pa(MIB(2))), PAGE_OK);
}

static void alloc_at_with_unknown_flags_is_einval(void **state) {
  (void)state;
  EXPECT_REFUSED(page_alloc_at(MIB(3), 1, 16), PAGE_EINVAL, page_from_pa(MIB(3)));
  EXPECT_REFUSED(page_alloc_at(MIB(3), 1, 0xF0000000u), PAGE_EINVAL, page_from_pa(MIB(3)));
  assert_status(page_alloc_at(MIB(3), 1, PAGE_ALLOC_DMA32), PAGE_OK);
  assert_status(page_free(page_from_pa(MIB(3))), PAGE_OK);
}

static void alloc_at_pool_must_match_the_region(void **state) {
  (void)state;
  EXPECT_REFUSED(page_alloc_at(MIB(3), 1, PAGE_ALLOC_USER), PAGE_EINVAL, page_from_pa(MIB(3)));
  EXPECT_REFUSED(page_alloc_at(MIB(34), 1, 0), PAGE_EINVAL, page_from_pa(MIB(34)));
  page_stats before = stats_now();
  assert_status(page_alloc_at(MIB(34), 2, PAGE_ALLOC_USER), PAGE_OK);
  assert_int_equal(stats_now().user_free_pages, before.user_free_pages - 2);
  assert_status(page_free(page_from_pa(MIB(34))), PAGE_OK);
  assert_status(page_alloc_at(MIB(3), 1, 0), PAGE_OK);
  assert_status(page_free(page_from_pa(MIB(3))), PAGE_OK);
}

static void alloc_at_zero_flag_zero_fills(void **state) {
  (void)state;
  assert_status(page_alloc_at(MIB(5), 3, 0), PAGE_OK);
  unsigned char *p = page_from_pa(MIB(5));
  memset(p, 0xEE, 3 * PAGE);
  assert_status(page_free(p), PAGE_OK);
  assert_status(page_alloc_at(MIB(5), 3, PAGE_ALLOC_ZERO), PAGE_OK);
  for (size_t i = 0; i < 3 * PAGE; i++)
    if (p[i] != 0) fail_msg("byte %zu is 0x%02x after PAGE_ALLOC_ZERO", i, p[i]);
  /* Pages beyond the block were not touched. */
  assert_status(page_free(p), PAGE_OK);
}

static void alloc_at_whole_region_then_nothing_is_left(void **state) {
  (void)state;
  size_t n = (MIB(36) - user_first) / PAGE;
  assert_status(page_alloc_at(user_first, n, PAGE_ALLOC_USER), PAGE_OK);
  assert_int_equal(stats_now().user_free_pages, 0);
  EXPECT_ALLOC_ENOMEM(page_alloc(1, PAGE_ALLOC_USER));
  assert_status(page_free(page_from_pa(user_first)), PAGE_OK);
}

int main(void) {
#define T(f) cmocka_unit_test_teardown(f, tm_teardown_all_free)
  const struct CMUnitTest tests[] = {
      T(alloc_at_reserves_exactly_those_pages_with_one_reference),
      T(ordinary_allocations_skip_reserved_pages),
      T(alloc_at_pages_in_use_is_ebusy_and_changes_nothing),
      T(alloc_at_outside_usable_pages_of_one_region_is_enotmanaged),
      T(alloc_at_unaligned_address_or_zero_or_overlong_count_is_einval),
      T(alloc_at_with_unknown_flags_is_einval),
      T(alloc_at_pool_must_match_the_region),
      T(alloc_at_zero_flag_zero_fills),
      T(alloc_at_whole_region_then_nothing_is_left),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
