/* page_split: a block owned alone becomes single-page blocks. Kernel
 * region [1 MiB, 17 MiB). */
#include "testmem.h"

static int setup(void **state) {
  (void)state;
  testmem_init();
  testmem_add_region(MIB(1), MIB(17), PAGE_POOL_KERNEL);
  return 0;
}

static void split_turns_a_block_into_single_pages_of_one_reference(void **state) {
  (void)state;
  void *p = page_alloc(8, 0);
  assert_non_null(p);
  page_stats before = stats_now();
  misuse_reset();
  assert_status(page_split(p), PAGE_OK);
  assert_no_misuse();
  /* The same pages stay in use; only the block boundaries changed. */
  assert_stats_unchanged(&before);
  assert_healthy();
  for (size_t i = 0; i < 8; i++) {
    assert_int_equal(page_refcount(page_n(p, i)), 1);
    assert_int_equal(page_block_pages(page_n(p, i)), 1);
  }
  for (size_t i = 0; i < 8; i++) assert_status(page_free(page_n(p, i)), PAGE_OK);
}

static void freeing_the_former_head_after_split_frees_one_page(void **state) {
  (void)state;
  void *p = page_alloc(4, 0);
  assert_non_null(p);
  assert_status(page_split(p), PAGE_OK);
  page_stats before = stats_now();
  assert_status(page_free(p), PAGE_OK);
  assert_int_equal(stats_now().used_pages, before.used_pages - 1);
  assert_int_equal(page_refcount(page_n(p, 1)), 1);
  for (size_t i = 1; i < 4; i++) assert_status(page_free(page_n(p, i)), PAGE_OK);
}

static void split_pages_freed_in_any_order_coalesce_again(void **state) {
  (void)state;
  uint64_t longest = stats_now().largest_free_run;
  void *p = page_alloc(64, 0);
  assert_non_null(p);
  assert_status(page_split(p), PAGE_OK);
  for (size_t i = 1; i < 64; i += 2) assert_status(page_free(page_n(p, i)), PAGE_OK);
  assert_healthy();
  EXPECT_ALLOC_ENOMEM(page_alloc(longest - 32, 0)); /* holes of one page only */
  for (size_t i = 62;; i -= 2) {
    assert_status(page_put(page_n(p, i)), PAGE_OK);
    if (i == 0) break;
  }
  assert_int_equal(stats_now().largest_free_run, longest);
  void *again = page_alloc(64, 0);
  assert_ptr_equal(again, p);
  assert_status(page_free(again), PAGE_OK);
}

static void split_pages_have_independent_reference_counts(void **state) {
  (void)state;
  void *p = page_alloc(4, 0);
  assert_non_null(p);
  assert_status(page_split(p), PAGE_OK);
  void *third = page_n(p, 2);
  assert_status(page_get(third), PAGE_OK);
  assert_int_equal(page_refcount(third), 2);
  assert_int_equal(page_refcount(p), 1);
  EXPECT_REFUSED(page_free(third), PAGE_ESHARED, third);
  assert_status(page_free(p), PAGE_OK); /* unaffected by third's count */
  assert_status(page_put(third), PAGE_OK);
  assert_status(page_put(third), PAGE_OK);
  assert_int_equal(page_refcount(third), 0);
  assert_int_equal(stats_now().used_pages, 2);
  assert_status(page_free(page_n(p, 1)), PAGE_OK);
  assert_status(page_free(page_n(p, 3)), PAGE_OK);
}

static void split_of_a_single_page_block_is_ok_and_changes_nothing(void **state) {
  (void)state;
  void *p = page_alloc(1, 0);
  assert_non_null(p);
  page_stats before = stats_now();
  assert_status(page_split(p), PAGE_OK);
  assert_status(page_split(p), PAGE_OK);
  assert_stats_unchanged(&before);
  assert_int_equal(page_refcount(p), 1);
  assert_int_equal(page_block_pages(p), 1);
  assert_status(page_free(p), PAGE_OK);
}

static void split_of_a_shared_block_is_eshared_and_changes_nothing(void **state) {
  (void)state;
  void *p = page_alloc(5, 0);
  assert_non_null(p);
  assert_status(page_get(p), PAGE_OK);
  EXPECT_REFUSED(page_split(p), PAGE_ESHARED, p);
  assert_int_equal(page_refcount(p), 2);
  assert_int_equal(page_block_pages(p), 5);
  assert_int_equal(page_refcount(page_n(p, 1)), 0);
  assert_status(page_put(p), PAGE_OK);
  /* Owned alone again, the same split works. */
  assert_status(page_split(p), PAGE_OK);
  for (size_t i = 0; i < 5; i++) assert_status(page_free(page_n(p, i)), PAGE_OK);
}

static void split_of_an_interior_page_is_enothead(void **state) {
  (void)state;
  void *p = page_alloc(3, 0);
  assert_non_null(p);
  EXPECT_REFUSED(page_split(page_n(p, 1)), PAGE_ENOTHEAD, page_n(p, 1));
  EXPECT_REFUSED(page_split(page_n(p, 2)), PAGE_ENOTHEAD, page_n(p, 2));
  assert_int_equal(page_block_pages(p), 3);
  assert_status(page_free(p), PAGE_OK);
}

static void split_of_a_free_page_is_enotallocated(void **state) {
  (void)state;
  void *p = page_alloc(2, 0);
  assert_non_null(p);
  assert_status(page_free(p), PAGE_OK);
  EXPECT_REFUSED(page_split(p), PAGE_ENOTALLOCATED, p);
  void *q = page_alloc(2, 0);
  assert_ptr_equal(q, p);
  assert_int_equal(page_block_pages(q), 2);
  assert_status(page_free(q), PAGE_OK);
}

static void split_of_an_unmanaged_address_is_enotmanaged(void **state) {
  (void)state;
  void *p = page_alloc(2, 0);
  assert_non_null(p);
  EXPECT_REFUSED(page_split(NULL), PAGE_ENOTMANAGED, NULL);
  EXPECT_REFUSED(page_split(kva_plus(p, 16)), PAGE_ENOTMANAGED, kva_plus(p, 16));
  EXPECT_REFUSED(page_split(page_from_pa(MIB(1))), PAGE_ENOTMANAGED, page_from_pa(MIB(1)));
  EXPECT_REFUSED(page_split(page_from_pa(MIB(40))), PAGE_ENOTMANAGED, page_from_pa(MIB(40)));
  assert_int_equal(page_block_pages(p), 2);
  assert_status(page_free(p), PAGE_OK);
}

int main(void) {
#define T(f) cmocka_unit_test_teardown(f, tm_teardown_all_free)
  const struct CMUnitTest tests[] = {
      T(split_turns_a_block_into_single_pages_of_one_reference),
      T(freeing_the_former_head_after_split_frees_one_page),
      T(split_pages_freed_in_any_order_coalesce_again),
      T(split_pages_have_independent_reference_counts),
      T(split_of_a_single_page_block_is_ok_and_changes_nothing),
      T(split_of_a_shared_block_is_eshared_and_changes_nothing),
      T(split_of_an_interior_page_is_enothead),
      T(split_of_a_free_page_is_enotallocated),
      T(split_of_an_unmanaged_address_is_enotmanaged),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
