/* The debugging aids from C: poisoning, scheduled failures, allocation
 * sites and leak reports, the dump, and the sized free. One allocator with
 * PAGE_DEBUG_POISON | PAGE_DEBUG_TRACK, a 4 MiB region at 1 MiB. */
#include "testmem.h"

#include <stdio.h>
#include <stdlib.h>

static int group_setup(void **state) {
  (void)state;
  testmem_map();
  page_config cfg = testmem_config();
  cfg.debug = PAGE_DEBUG_POISON | PAGE_DEBUG_TRACK;
  if (page_init(&cfg) != PAGE_OK) return -1;
  testmem_add_region(MIB(1), MIB(5), PAGE_POOL_KERNEL);
  return 0;
}

static void a_write_after_free_is_reported_when_the_page_comes_back(void **state) {
  (void)state;
  unsigned char *block = page_alloc(2, 0);
  assert_non_null(block);
  assert_status(page_free(block), PAGE_OK);
  for (size_t i = 0; i < 2 * PAGE; i++) assert_int_equal(block[i], 0xAA);
  block[PAGE + 17] = 1; /* a stale pointer writes into the freed block */
  page_stats before = stats_now();
  misuse_reset();
  unsigned char *again = page_alloc(2, PAGE_ALLOC_ZERO);
  assert_ptr_equal(again, block);
  assert_misuse_once(PAGE_ECORRUPT, block + PAGE);
  assert_int_equal(stats_now().misuse_reports, before.misuse_reports + 1);
  for (size_t i = 0; i < 2 * PAGE; i++) assert_int_equal(again[i], 0);
  assert_status(page_free(again), PAGE_OK);
  misuse_reset();
  again = page_alloc(2, 0); /* poisoned cleanly this time */
  assert_no_misuse();
  assert_status(page_free(again), PAGE_OK);
}

static void the_check_finds_a_write_after_free_before_the_page_comes_back(void **state) {
  (void)state;
  unsigned char *block = page_alloc(2, 0);
  assert_non_null(block);
  assert_status(page_free(block), PAGE_OK);
  assert_status(page_check(), PAGE_OK);
  block[PAGE + 5] = 0; /* a stale pointer writes into the freed block */
  misuse_reset();
  assert_status(page_check(), PAGE_ECORRUPT);
  assert_misuse_once(PAGE_ECORRUPT, block + PAGE);
  /* Nothing changed: the allocation that gets the page back reports it too. */
  misuse_reset();
  unsigned char *again = page_alloc(2, 0);
  assert_ptr_equal(again, block);
  assert_misuse_once(PAGE_ECORRUPT, block + PAGE);
  assert_status(page_check(), PAGE_OK);
  assert_status(page_free(again), PAGE_OK);
  misuse_reset();
}

struct leak_report {
  int blocks;
  char sites[8][64];
  size_t pages[8];
  uint32_t refcounts[8];
};

static void collect(void *ctx, const page_live_block *block) {
  struct leak_report *report = ctx;
  if (report->blocks == 8) return;
  int i = report->blocks++;
  snprintf(report->sites[i], sizeof report->sites[i], "%.*s", (int)block->tag_len,
           block->tag ? block->tag : "");
  report->pages[i] = block->pages;
  report->refcounts[i] = block->refcount;
  assert_ptr_equal(page_from_pa(block->pa), block->addr);
}

static void a_leak_is_reported_with_its_allocation_site(void **state) {
  (void)state;
  void *freed = PAGE_ALLOC_HERE(1, 0);
  int line = __LINE__ + 1;
  void *leaked = PAGE_ALLOC_HERE(3, 0);
  void *named = page_alloc_tagged(1, 0, "page tables");
  assert_non_null(freed);
  assert_non_null(leaked);
  assert_non_null(named);
  assert_status(page_get(named), PAGE_OK);
  assert_status(page_free(freed), PAGE_OK);

  struct leak_report report = {0};
  assert_status(page_for_each_live(collect, &report), PAGE_OK);
  assert_int_equal(report.blocks, 2);
  char expected[64];
  snprintf(expected, sizeof expected, "%s:%d", __FILE__, line);
  assert_string_equal(report.sites[0], expected);
  assert_int_equal(report.pages[0], 3);
  assert_int_equal(report.refcounts[0], 1);
  assert_string_equal(report.sites[1], "page tables");
  assert_int_equal(report.refcounts[1], 2);

  assert_status(page_free(leaked), PAGE_OK);
  assert_status(page_put(named), PAGE_OK);
  assert_status(page_put(named), PAGE_OK);
  report.blocks = 0;
  assert_status(page_for_each_live(collect, &report), PAGE_OK);
  assert_int_equal(report.blocks, 0);
}

static void a_null_visitor_is_refused(void **state) {
  (void)state;
  EXPECT_REFUSED(page_for_each_live(NULL, NULL), PAGE_EINVAL, NULL);
}

static void scheduled_failures_fail_allocations_until_turned_off(void **state) {
  (void)state;
  void *kept[2];
  assert_status(page_fail_after(2), PAGE_OK);
  kept[0] = page_alloc(1, 0);
  kept[1] = page_alloc(1, 0);
  assert_non_null(kept[0]);
  assert_non_null(kept[1]);
  EXPECT_ALLOC_ENOMEM(page_alloc(1, 0));
  EXPECT_ALLOC_ENOMEM(page_alloc_aligned(4, 4, PAGE_ALLOC_ZERO));
  EXPECT_ALLOC_ENOMEM(page_alloc_tagged(1, 0, "scheduled"));
  /* Reserving exact pages is not a search for memory: never failed. */
  assert_status(page_alloc_at(MIB(4), 2, 0), PAGE_OK);
  assert_status(page_free(page_from_pa(MIB(4))), PAGE_OK);
  EXPECT_ALLOC_ENOMEM(page_alloc(1, 0));
  assert_status(page_fail_off(), PAGE_OK);
  for (int i = 0; i < 2; i++) assert_status(page_free(kept[i]), PAGE_OK);

  assert_status(page_fail_every(2), PAGE_OK);
  void *first = page_alloc(1, 0);
  assert_non_null(first);
  EXPECT_ALLOC_ENOMEM(page_alloc(1, 0));
  void *third = page_alloc(1, 0);
  assert_non_null(third);
  /* A page_fail_after rule joins the page_fail_every one: the next attempt
   * fails by the first rule, and every one after it by the second. */
  assert_status(page_fail_after(1), PAGE_OK);
  EXPECT_ALLOC_ENOMEM(page_alloc(1, 0));
  EXPECT_ALLOC_ENOMEM(page_alloc(1, 0));
  EXPECT_ALLOC_ENOMEM(page_alloc(1, 0));
  assert_status(page_fail_off(), PAGE_OK);
  assert_status(page_free(first), PAGE_OK);
  assert_status(page_free(third), PAGE_OK);
  EXPECT_REFUSED(page_fail_every(0), PAGE_EINVAL, NULL);
}

static void the_dump_lists_every_page_state(void **state) {
  (void)state;
  void *used = page_alloc(4, 0);
  void *shared = page_alloc(2, 0);
  assert_status(page_get(shared), PAGE_OK);
  size_t needed = page_dump(NULL, 0);
  char *text = malloc(needed + 1);
  assert_non_null(text);
  assert_int_equal(page_dump(text, needed + 1), needed);
  assert_int_equal(strlen(text), needed);
  assert_non_null(strstr(text, "kpalloc-dump 1\nstats total=1024 "));
  assert_non_null(strstr(text, "region start=0x100000 end=0x500000 pool=kernel\n"));
  assert_non_null(strstr(text, " U4 S2 F"));
  assert_string_equal(text + needed - 4, "end\n");
  char small[8];
  assert_int_equal(page_dump(small, sizeof small), needed);
  assert_string_equal(small, "kpalloc");
  free(text);
  assert_status(page_put(shared), PAGE_OK);
  assert_status(page_free(shared), PAGE_OK);
  assert_status(page_free(used), PAGE_OK);
}

static void a_sized_free_checks_the_length(void **state) {
  (void)state;
  void *block = page_alloc(5, 0);
  assert_non_null(block);
  EXPECT_REFUSED(page_free_sized(block, 4), PAGE_EINVAL, block);
  EXPECT_REFUSED(page_free_sized(block, 6), PAGE_EINVAL, block);
  assert_int_equal(page_block_pages(block), 5);
  assert_status(page_free_sized(block, 5), PAGE_OK);
  EXPECT_REFUSED(page_free_sized(block, 5), PAGE_ENOTALLOCATED, block);
}

static int no_pages_in_use(void **state) {
  (void)state;
  page_stats s = stats_now();
  return s.used_pages == 0 && page_check() == PAGE_OK ? 0 : -1;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(a_write_after_free_is_reported_when_the_page_comes_back, no_pages_in_use),
      cmocka_unit_test_teardown(the_check_finds_a_write_after_free_before_the_page_comes_back, no_pages_in_use),
      cmocka_unit_test_teardown(a_leak_is_reported_with_its_allocation_site, no_pages_in_use),
      cmocka_unit_test_teardown(a_null_visitor_is_refused, no_pages_in_use),
      cmocka_unit_test_teardown(scheduled_failures_fail_allocations_until_turned_off, no_pages_in_use),
      cmocka_unit_test_teardown(the_dump_lists_every_page_state, no_pages_in_use),
      cmocka_unit_test_teardown(a_sized_free_checks_the_length, no_pages_in_use),
  };
  return cmocka_run_group_tests_name("debugging aids", tests, group_setup, NULL);
}
