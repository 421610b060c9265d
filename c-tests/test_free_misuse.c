/* page_free and its refusals: each is reported once through on_misuse with
 * the pointer passed, moves only misuse_reports, and leaves the allocator
 * able to do the same thing properly. Kernel regions [1 MiB, 17 MiB) and
 * [32 MiB, 33 MiB). */
#include "testmem.h"

#include <stdlib.h>

static int setup(void **state) {
  (void)state;
  testmem_init();
  testmem_add_region(MIB(1), MIB(17), PAGE_POOL_KERNEL);
  testmem_add_region(MIB(32), MIB(33), PAGE_POOL_KERNEL);
  return 0;
}

static void free_returns_the_block_and_is_not_reported(void **state) {
  (void)state;
  page_stats before = stats_now();
  void *p = page_alloc(7, 0);
  assert_non_null(p);
  misuse_reset();
  assert_status(page_free(p), PAGE_OK);
  assert_no_misuse();
  page_stats after = stats_now();
  assert_int_equal(after.used_pages, before.used_pages);
  assert_int_equal(after.free_pages, before.free_pages);
  assert_int_equal(after.misuse_reports, before.misuse_reports);
}

static void double_free_is_enotallocated_and_changes_nothing(void **state) {
  (void)state;
  void *p = page_alloc(3, 0);
  void *neighbour = page_alloc(1, 0);
  assert_non_null(p);
  assert_non_null(neighbour);
  assert_status(page_free(p), PAGE_OK);
  EXPECT_REFUSED(page_free(p), PAGE_ENOTALLOCATED, p);
  EXPECT_REFUSED(page_free(p), PAGE_ENOTALLOCATED, p);
  /* The neighbour is untouched and the freed block can be had again. */
  assert_int_equal(page_refcount(neighbour), 1);
  void *q = page_alloc(3, 0);
  assert_ptr_equal(q, p);
  assert_status(page_free(q), PAGE_OK);
  assert_status(page_free(neighbour), PAGE_OK);
}

static void free_of_a_never_allocated_page_is_enotallocated(void **state) {
  (void)state;
  void *page = page_from_pa(MIB(10));
  EXPECT_REFUSED(page_free(page), PAGE_ENOTALLOCATED, page);
  void *last = page_from_pa(MIB(17) - PAGE);
  EXPECT_REFUSED(page_free(last), PAGE_ENOTALLOCATED, last);
  assert_status(page_alloc_at(MIB(10), 1, 0), PAGE_OK);
  assert_status(page_free(page), PAGE_OK);
}

static void free_of_interior_page_is_rejected_and_changes_nothing(void **state) {
  (void)state;
  void *p = page_alloc(5, 0);
  assert_non_null(p);
  for (size_t i = 1; i < 5; i++) EXPECT_REFUSED(page_free(page_n(p, i)), PAGE_ENOTHEAD, page_n(p, i));
  assert_int_equal(page_refcount(p), 1);
  assert_int_equal(page_block_pages(p), 5);
  assert_status(page_free(p), PAGE_OK);
  /* Once the block is free, its former interior pages are free pages. */
  EXPECT_REFUSED(page_free(page_n(p, 2)), PAGE_ENOTALLOCATED, page_n(p, 2));
}

static void free_of_null_is_enotmanaged(void **state) {
  (void)state;
  void *p = page_alloc(1, 0);
  assert_non_null(p);
  EXPECT_REFUSED(page_free(NULL), PAGE_ENOTMANAGED, NULL);
  assert_status(page_free(p), PAGE_OK);
}

static void free_of_an_unaligned_address_inside_a_block_is_enotmanaged(void **state) {
  (void)state;
  void *p = page_alloc(2, 0);
  assert_non_null(p);
  EXPECT_REFUSED(page_free(kva_plus(p, 1)), PAGE_ENOTMANAGED, kva_plus(p, 1));
  EXPECT_REFUSED(page_free(kva_plus(p, 2048)), PAGE_ENOTMANAGED, kva_plus(p, 2048));
  EXPECT_REFUSED(page_free(kva_plus(p, PAGE + 8)), PAGE_ENOTMANAGED, kva_plus(p, PAGE + 8));
  assert_int_equal(page_refcount(p), 1);
  assert_status(page_free(p), PAGE_OK);
}

static void free_of_a_metadata_page_is_enotmanaged(void **state) {
  (void)state;
  void *p = page_alloc(1, 0);
  assert_non_null(p);
  void *meta = page_from_pa(MIB(1));
  void *meta2 = page_from_pa(MIB(32));
  EXPECT_REFUSED(page_free(meta), PAGE_ENOTMANAGED, meta);
  EXPECT_REFUSED(page_free(meta2), PAGE_ENOTMANAGED, meta2);
  /* The page just before the first usable one is metadata too. */
  void *last_meta = page_n(p, 0);
  last_meta = (unsigned char *)last_meta - PAGE;
  EXPECT_REFUSED(page_free(last_meta), PAGE_ENOTMANAGED, last_meta);
  assert_status(page_free(p), PAGE_OK);
}

static void free_outside_every_region_is_enotmanaged(void **state) {
  (void)state;
  void *heap = malloc(PAGE);
  void *const outside[] = {
      page_from_pa(0),
      page_from_pa(MIB(1) - PAGE),
      page_from_pa(MIB(17)),             /* one past the end */
      page_from_pa(MIB(20)),             /* between regions */
      page_from_pa(MIB(33)),
      page_from_pa(GIB(4)),
      page_from_pa(((uint64_t)1 << 52) - PAGE),
      (unsigned char *)page_from_pa(0) - PAGE, /* below phys_offset */
      (void *)(uintptr_t)PAGE,
      (void *)(uintptr_t)(UINT64_MAX & ~(PAGE - 1)),
      heap,
  };
  for (size_t i = 0; i < sizeof outside / sizeof outside[0]; i++)
    EXPECT_REFUSED(page_free(outside[i]), PAGE_ENOTMANAGED, outside[i]);
  free(heap);
  void *p = page_alloc(1, 0);
  assert_non_null(p);
  assert_status(page_free(p), PAGE_OK);
}

static void free_of_a_page_of_another_region_frees_only_that_region(void **state) {
  (void)state;
  assert_status(page_alloc_at(MIB(33) - PAGE, 1, 0), PAGE_OK);
  void *hi = page_from_pa(MIB(33) - PAGE);
  void *lo = page_alloc(1, 0);
  assert_non_null(lo);
  page_stats before = stats_now();
  assert_status(page_free(hi), PAGE_OK);
  assert_int_equal(stats_now().used_pages, before.used_pages - 1);
  assert_int_equal(page_refcount(lo), 1);
  EXPECT_REFUSED(page_free(hi), PAGE_ENOTALLOCATED, hi);
  assert_status(page_free(lo), PAGE_OK);
}

static void every_refusal_is_reported_once_per_call_in_order(void **state) {
  (void)state;
  void *p = page_alloc(2, 0);
  assert_non_null(p);
  page_stats before = stats_now();
  misuse_reset();
  assert_status(page_free(NULL), PAGE_ENOTMANAGED);
  assert_status(page_free(page_n(p, 1)), PAGE_ENOTHEAD);
  assert_status(page_free(page_n(p, 2)), PAGE_ENOTALLOCATED);
  assert_int_equal(hooks.misuse_calls, 3);
  assert_status(hooks.misuse[0].status, PAGE_ENOTMANAGED);
  assert_null(hooks.misuse[0].addr);
  assert_status(hooks.misuse[1].status, PAGE_ENOTHEAD);
  assert_ptr_equal(hooks.misuse[1].addr, page_n(p, 1));
  assert_status(hooks.misuse[2].status, PAGE_ENOTALLOCATED);
  assert_ptr_equal(hooks.misuse[2].addr, page_n(p, 2));
  assert_stats_moved(&before, 3, 0);
  assert_status(page_free(p), PAGE_OK);
}

int main(void) {
#define T(f) cmocka_unit_test_teardown(f, tm_teardown_all_free)
  const struct CMUnitTest tests[] = {
      T(free_returns_the_block_and_is_not_reported),
      T(double_free_is_enotallocated_and_changes_nothing),
      T(free_of_a_never_allocated_page_is_enotallocated),
      T(free_of_interior_page_is_rejected_and_changes_nothing),
      T(free_of_null_is_enotmanaged),
      T(free_of_an_unaligned_address_inside_a_block_is_enotmanaged),
      T(free_of_a_metadata_page_is_enotmanaged),
      T(free_outside_every_region_is_enotmanaged),
      T(free_of_a_page_of_another_region_frees_only_that_region),
      T(every_refusal_is_reported_once_per_call_in_order),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
