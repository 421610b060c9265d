/* page_get, page_put, page_refcount, page_block_pages. Kernel region
 * [1 MiB, 17 MiB). */
#include "testmem.h"

#include <stdlib.h>

static uint64_t meta_pages;

static int setup(void **state) {
  (void)state;
  testmem_init();
  meta_pages = (testmem_add_region(MIB(1), MIB(17), PAGE_POOL_KERNEL) - MIB(1)) / PAGE;
  return 0;
}

static void get_adds_and_put_drops_a_reference(void **state) {
  (void)state;
  void *p = page_alloc(3, 0);
  assert_non_null(p);
  page_stats before = stats_now();
  misuse_reset();
  assert_status(page_get(p), PAGE_OK);
  assert_int_equal(page_refcount(p), 2);
  assert_status(page_get(p), PAGE_OK);
  assert_int_equal(page_refcount(p), 3);
  assert_status(page_put(p), PAGE_OK);
  assert_int_equal(page_refcount(p), 2);
  assert_status(page_put(p), PAGE_OK);
  assert_int_equal(page_refcount(p), 1);
  /* Still one allocated block of three pages; nothing else moved. */
  assert_int_equal(page_block_pages(p), 3);
  assert_stats_unchanged(&before);
  assert_no_misuse();
  assert_healthy();
  assert_status(page_free(p), PAGE_OK);
}

static void last_put_frees_the_whole_block(void **state) {
  (void)state;
  page_stats before = stats_now();
  void *p = page_alloc(6, 0);
  assert_non_null(p);
  uint64_t pa = page_to_pa(p);
  assert_status(page_get(p), PAGE_OK);
  assert_status(page_put(p), PAGE_OK);
  assert_int_equal(stats_now().used_pages, before.used_pages + 6);
  assert_status(page_put(p), PAGE_OK);
  assert_int_equal(page_refcount(p), 0);
  assert_int_equal(page_block_pages(p), 0);
  page_stats after = stats_now();
  assert_int_equal(after.used_pages, before.used_pages);
  assert_int_equal(after.free_pages, before.free_pages);
  assert_healthy();
  void *again = page_alloc(6, 0);
  assert_int_equal(page_to_pa(again), pa);
  assert_status(page_free(again), PAGE_OK);
}

static void free_of_shared_block_is_eshared_and_changes_nothing(void **state) {
  (void)state;
  void *p = page_alloc(2, 0);
  assert_non_null(p);
  assert_status(page_get(p), PAGE_OK);
  EXPECT_REFUSED(page_free(p), PAGE_ESHARED, p);
  assert_int_equal(page_refcount(p), 2);
  assert_int_equal(page_block_pages(p), 2);
  assert_status(page_put(p), PAGE_OK);
  assert_status(page_free(p), PAGE_OK);
}

static void get_on_a_free_page_is_enotallocated_and_never_revives_it(void **state) {
  (void)state;
  void *p = page_alloc(1, 0);
  assert_non_null(p);
  assert_status(page_free(p), PAGE_OK);
  EXPECT_REFUSED(page_get(p), PAGE_ENOTALLOCATED, p);
  assert_int_equal(page_refcount(p), 0);
  /* A page never allocated at all. */
  void *never = page_from_pa(MIB(12));
  EXPECT_REFUSED(page_get(never), PAGE_ENOTALLOCATED, never);
  /* The page is still free: the next allocation gets it with one reference. */
  void *q = page_alloc(1, 0);
  assert_ptr_equal(q, p);
  assert_int_equal(page_refcount(q), 1);
  assert_status(page_free(q), PAGE_OK);
}

static void put_on_a_free_page_is_enotallocated(void **state) {
  (void)state;
  void *p = page_alloc(2, 0);
  assert_non_null(p);
  assert_status(page_put(p), PAGE_OK);
  EXPECT_REFUSED(page_put(p), PAGE_ENOTALLOCATED, p);
  EXPECT_REFUSED(page_put(page_n(p, 1)), PAGE_ENOTALLOCATED, page_n(p, 1));
  void *q = page_alloc(2, 0);
  assert_ptr_equal(q, p);
  assert_status(page_free(q), PAGE_OK);
}

static void get_and_put_on_an_interior_page_are_enothead(void **state) {
  (void)state;
  void *p = page_alloc(4, 0);
  assert_non_null(p);
  for (size_t i = 1; i < 4; i++) {
    EXPECT_REFUSED(page_get(page_n(p, i)), PAGE_ENOTHEAD, page_n(p, i));
    EXPECT_REFUSED(page_put(page_n(p, i)), PAGE_ENOTHEAD, page_n(p, i));
  }
  assert_int_equal(page_refcount(p), 1);
  assert_int_equal(page_block_pages(p), 4);
  assert_status(page_free(p), PAGE_OK);
}

static void get_and_put_on_unmanaged_addresses_are_enotmanaged(void **state) {
  (void)state;
  void *p = page_alloc(1, 0);
  assert_non_null(p);
  void *heap = malloc(64);
  void *const bad[] = {
      kva_plus(p, 1),              /* not page aligned */
      kva_plus(p, PAGE - 1),
      page_from_pa(MIB(17)),       /* just past the region */
      page_from_pa(MIB(1) - PAGE), /* just before it */
      page_from_pa(MIB(1)),        /* its metadata */
      page_from_pa(0),
      page_from_pa(GIB(2)),
      heap,
  };
  EXPECT_REFUSED(page_get(NULL), PAGE_ENOTMANAGED, NULL);
  EXPECT_REFUSED(page_put(NULL), PAGE_ENOTMANAGED, NULL);
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    EXPECT_REFUSED(page_get(bad[i]), PAGE_ENOTMANAGED, bad[i]);
    EXPECT_REFUSED(page_put(bad[i]), PAGE_ENOTMANAGED, bad[i]);
  }
  free(heap);
  assert_int_equal(page_refcount(p), 1);
  assert_status(page_free(p), PAGE_OK);
}

static void get_p(void *p) { assert_status(page_get(p), PAGE_OK); }

static void refcount_at_maximum_is_eoverflow_and_changes_nothing(void **state) {
  (void)state;
  void *p = page_alloc(2, 0);
  assert_non_null(p);
  /* Reaching the maximum through page_get takes 2^31 calls: find the
   * block's count in the region's metadata (the one word page_get changes)
   * and set it to PAGE_REFCOUNT_MAX - 1 there. */
  uint32_t *count = tm_find_changed_word(testmem_kva(MIB(1)), meta_pages * PAGE, get_p, p);
  assert_non_null(count);
  assert_int_equal(*count, 2);
  *count = PAGE_REFCOUNT_MAX - 1;
  assert_int_equal(page_refcount(p), PAGE_REFCOUNT_MAX - 1);
  assert_status(page_get(p), PAGE_OK);
  assert_int_equal(page_refcount(p), PAGE_REFCOUNT_MAX);
  EXPECT_REFUSED(page_get(p), PAGE_EOVERFLOW, p);
  assert_int_equal(page_refcount(p), PAGE_REFCOUNT_MAX);
  assert_int_equal(page_block_pages(p), 2);
  EXPECT_REFUSED(page_free(p), PAGE_ESHARED, p);
  assert_status(page_put(p), PAGE_OK);
  assert_int_equal(page_refcount(p), PAGE_REFCOUNT_MAX - 1);
  assert_status(page_get(p), PAGE_OK);
  *count = 1;
  assert_healthy();
  assert_status(page_free(p), PAGE_OK);
}

static void queries_are_zero_for_free_interior_and_unmanaged_pages(void **state) {
  (void)state;
  void *p = page_alloc(3, 0);
  assert_non_null(p);
  assert_int_equal(page_refcount(p), 1);
  assert_int_equal(page_block_pages(p), 3);
  assert_int_equal(page_refcount(page_n(p, 2)), 0);
  assert_int_equal(page_block_pages(page_n(p, 2)), 0);
  assert_int_equal(page_refcount(page_n(p, 3)), 0); /* free */
  assert_int_equal(page_block_pages(page_n(p, 3)), 0);
  assert_int_equal(page_refcount(NULL), 0);
  assert_int_equal(page_block_pages(NULL), 0);
  assert_int_equal(page_refcount(kva_plus(p, 8)), 0);
  assert_int_equal(page_block_pages(kva_plus(p, 8)), 0);
  assert_int_equal(page_refcount(page_from_pa(MIB(1))), 0);
  assert_int_equal(page_block_pages(page_from_pa(MIB(20))), 0);
  /* Queries are not misuse. */
  page_stats before = stats_now();
  misuse_reset();
  (void)page_refcount(NULL);
  (void)page_block_pages(page_from_pa(0));
  assert_no_misuse();
  assert_stats_unchanged(&before);
  assert_status(page_free(p), PAGE_OK);
}

static void many_references_are_counted_exactly(void **state) {
  (void)state;
  void *p = page_alloc(1, 0);
  assert_non_null(p);
  for (uint32_t i = 0; i < 100000; i++) assert_true(page_get(p) == PAGE_OK);
  assert_int_equal(page_refcount(p), 100001);
  for (uint32_t i = 0; i < 100000; i++) assert_true(page_put(p) == PAGE_OK);
  assert_int_equal(page_refcount(p), 1);
  assert_int_equal(stats_now().used_pages, 1);
  assert_status(page_put(p), PAGE_OK);
  assert_int_equal(stats_now().used_pages, 0);
}

int main(void) {
#define T(f) cmocka_unit_test_teardown(f, tm_teardown_all_free)
  const struct CMUnitTest tests[] = {
      T(get_adds_and_put_drops_a_reference),
      T(last_put_frees_the_whole_block),
      T(free_of_shared_block_is_eshared_and_changes_nothing),
      T(get_on_a_free_page_is_enotallocated_and_never_revives_it),
      T(put_on_a_free_page_is_enotallocated),
      T(get_and_put_on_an_interior_page_are_enothead),
      T(get_and_put_on_unmanaged_addresses_are_enotmanaged),
      T(refcount_at_maximum_is_eoverflow_and_changes_nothing),
      T(queries_are_zero_for_free_interior_and_unmanaged_pages),
      T(many_references_are_counted_exactly),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
