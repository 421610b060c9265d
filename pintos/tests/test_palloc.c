/* The original Pintos flavour: void palloc_init (size_t user_page_limit),
 * with the expectations a Pintos test has of palloc. The allocator is set up
 * once (group setup); every test gives back what it takes. */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "support.h"

/* 6 MiB from 1 MiB in two regions, the second with an unaligned start:
 * [1 MiB, 3 MiB) and [3 MiB + 64 KiB + 123, 7 MiB). */
#define MEM_SIZE (6 * MIB)
#define R1_START PHYS_BASE
#define R1_END (3 * MIB)
#define R2_START (3 * MIB + 64 * 1024 + 123)
#define R2_END (7 * MIB)
#define USER_LIMIT 300
#define R1_PAGES ((R1_END - R1_START) / PG)
#define R2_PAGES ((R2_END - (3 * MIB + 68 * 1024)) / PG)
#define TOTAL_PAGES (R1_PAGES + R2_PAGES)
#define MAX_PAGES (TOTAL_PAGES)

size_t palloc_platform(page_config *cfg, struct palloc_region *regions, size_t max) {
  assert_true(max >= 2);
  *cfg = test_config(MEM_SIZE);
  regions[0] = (struct palloc_region){R2_START, R2_END}; /* unsorted on purpose */
  regions[1] = (struct palloc_region){R1_START, R1_END};
  return 2;
}

static int setup(void **state) {
  (void)state;
  palloc_init(USER_LIMIT);
  return 0;
}

static page_stats stats(void) {
  page_stats s;
  assert_int_equal(page_stats_get(&s), PAGE_OK);
  return s;
}

static void *pages[MAX_PAGES];

/* Allocates single pages with `flags` until NULL; returns how many. */
static size_t drain(enum palloc_flags flags) {
  size_t n = 0;
  while ((pages[n] = palloc_get_page(flags)) != NULL) {
    assert_true(n + 1 < MAX_PAGES);
    n++;
  }
  return n;
}

static void give_back(size_t n) {
  for (size_t i = 0; i < n; i++) palloc_free_page(pages[i]);
}

static void layout_splits_like_pintos(void **state) {
  (void)state;
  const struct palloc_layout *l = palloc_get_layout();
  assert_int_equal(l->user_pages, USER_LIMIT);
  assert_int_equal(l->kernel_pages, TOTAL_PAGES - USER_LIMIT);
  assert_int_equal(l->kernel_regions, 2);
  assert_int_equal(l->user_regions, 1);
  assert_int_equal(l->mem_end, R2_END);
  page_stats s = stats();
  assert_int_equal(s.total_pages, TOTAL_PAGES);
  assert_int_equal(s.regions, 3);
  /* The user pool pays for its own metadata, as a Pintos pool its bitmap. */
  assert_true(s.user_free_pages < USER_LIMIT && s.user_free_pages >= USER_LIMIT - 2);
  assert_int_equal(page_check(), PAGE_OK);
}

static void user_pool_exhausts_and_refills_to_same_count(void **state) {
  (void)state;
  uint64_t before = user_free_pages();
  size_t first = drain(PAL_USER);
  assert_int_equal(first, before);
  assert_int_equal(user_free_pages(), 0);
  assert_null(palloc_get_page(PAL_USER));
  give_back(first);
  assert_int_equal(user_free_pages(), before);
  size_t second = drain(PAL_USER);
  assert_int_equal(second, first);
  give_back(second);
  assert_int_equal(page_check(), PAGE_OK);
  assert_int_equal(stats().used_pages, 0);
}

static void kernel_pool_unaffected_by_user_exhaustion(void **state) {
  (void)state;
  uint64_t kernel_before = kernel_free_pages();
  unsigned misuse_before = misuse_log.count;
  size_t n = drain(PAL_USER);
  assert_true(n > 0);
  assert_int_equal(kernel_free_pages(), kernel_before);
  void *k = palloc_get_page(0);
  assert_non_null(k);
  void *k2 = palloc_get_multiple(PAL_ZERO, 8);
  assert_non_null(k2);
  /* Kernel pages come from the bottom of memory, user pages from the top. */
  for (size_t i = 0; i < n; i++) assert_true(page_to_pa(pages[i]) > page_to_pa(k2));
  palloc_free_page(k);
  palloc_free_multiple(k2, 8);
  give_back(n);
  assert_int_equal(kernel_free_pages(), kernel_before);
  assert_int_equal(misuse_log.count, misuse_before); /* exhaustion is not misuse */
  assert_int_equal(page_check(), PAGE_OK);
}

static void multiple_pages_are_contiguous(void **state) {
  (void)state;
  for (size_t n = 1; n <= 64; n *= 4) {
    for (int user = 0; user <= 1; user++) {
      unsigned char *p = palloc_get_multiple(user ? PAL_USER : 0, n);
      assert_non_null(p);
      assert_int_equal(page_block_pages(p), n);
      uint64_t pa = page_to_pa(p);
      assert_int_equal(pa % PG, 0);
      /* Contiguous: one kernel-virtual range over consecutive frames. */
      for (size_t i = 0; i < n; i++) {
        assert_int_equal(page_to_pa(p + i * PG), pa + i * PG);
        memset(p + i * PG, (int)i, PG);
      }
      palloc_free_multiple(p, n);
    }
  }
  assert_int_equal(stats().used_pages, 0);
}

static void pal_zero_really_zeroes(void **state) {
  (void)state;
  /* Dirty the lowest pages, free them, and get them back with PAL_ZERO. */
  for (int user = 0; user <= 1; user++) {
    enum palloc_flags pool = user ? PAL_USER : 0;
    unsigned char *dirty = palloc_get_multiple(pool, 4);
    assert_non_null(dirty);
    memset(dirty, 0xa5, 4 * PG);
    palloc_free_multiple(dirty, 4);
    unsigned char *clean = palloc_get_multiple(pool | PAL_ZERO, 4);
    assert_ptr_equal(clean, dirty);
    for (size_t i = 0; i < 4 * PG; i++) assert_int_equal(clean[i], 0);
    palloc_free_multiple(clean, 4);
    unsigned char *one = palloc_get_page(pool);
    memset(one, 0x5a, PG);
    palloc_free_page(one);
    one = palloc_get_page(pool | PAL_ZERO);
    for (size_t i = 0; i < PG; i++) assert_int_equal(one[i], 0);
    palloc_free_page(one);
  }
}

static void free_multiple_with_wrong_count_changes_nothing(void **state) {
  (void)state;
  unsigned char *p = palloc_get_multiple(0, 4);
  assert_non_null(p);
  page_stats before = stats();
  unsigned reported_before = misuse_log.count;
  const size_t wrong[] = {3, 5, 1, 0};
  for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
    if (wrong[i] == 1)
      palloc_free_page(p);
    else
      palloc_free_multiple(p, wrong[i]);
    assert_int_equal(misuse_log.status, PAGE_EINVAL);
    assert_ptr_equal(misuse_log.addr, p);
    assert_int_equal(misuse_log.count, reported_before + i + 1);
    assert_int_equal(page_check(), PAGE_OK);
    page_stats after = stats();
    assert_int_equal(after.misuse_reports, before.misuse_reports + i + 1);
    after.misuse_reports = before.misuse_reports;
    assert_memory_equal(&after, &before, sizeof before);
    assert_int_equal(page_block_pages(p), 4);
    assert_int_equal(page_refcount(p), 1);
  }
  palloc_free_multiple(p, 4);
  assert_int_equal(page_block_pages(p), 0);
  assert_int_equal(stats().used_pages, 0);
  assert_int_equal(misuse_log.count, reported_before + 4);
}

static void bad_frees_are_reported(void **state) {
  (void)state;
  page_stats before = stats();
  unsigned reported = misuse_log.count;
  int local;

  palloc_free_page(NULL);
  assert_int_equal(misuse_log.status, PAGE_ENOTMANAGED);
  assert_null(misuse_log.addr);
  palloc_free_page(&local);
  assert_int_equal(misuse_log.status, PAGE_ENOTMANAGED);

  unsigned char *p = palloc_get_multiple(0, 2);
  palloc_free_page(p + PG); /* the interior page of a block */
  assert_int_equal(misuse_log.status, PAGE_ENOTHEAD);
  palloc_free_multiple(p, 2);
  palloc_free_multiple(p, 2); /* double free */
  assert_int_equal(misuse_log.status, PAGE_ENOTALLOCATED);
  assert_ptr_equal(misuse_log.addr, p);

  assert_int_equal(misuse_log.count, reported + 4);
  page_stats after = stats();
  assert_int_equal(after.misuse_reports, before.misuse_reports + 4);
  assert_int_equal(after.used_pages, before.used_pages);
  assert_int_equal(after.free_pages, before.free_pages);
  assert_int_equal(page_check(), PAGE_OK);
}

static void get_multiple_zero_returns_null(void **state) {
  (void)state;
  page_stats before = stats();
  assert_null(palloc_get_multiple(0, 0));
  assert_int_equal(misuse_log.status, PAGE_EINVAL);
  assert_null(palloc_get_multiple(PAL_USER | PAL_ZERO, 0));
  page_stats after = stats();
  assert_int_equal(after.used_pages, before.used_pages);
  assert_int_equal(after.misuse_reports, before.misuse_reports + 2);
}

static void exhaust_user_pool_then_assert(void) {
  while (palloc_get_page(PAL_USER) != NULL) continue;
  palloc_get_page(PAL_ASSERT | PAL_USER);
  _exit(0); /* not reached: the panic hook ends the process */
}

static void pal_assert_failure_panics(void **state) {
  (void)state;
  char message[256];
  int status = run_in_child(exhaust_user_pool_then_assert, message, sizeof message);
  assert_int_equal(status, PANIC_EXIT);
  printf("  panic hook message: %s\n", message);
  assert_non_null(strstr(message, "kpalloc: allocation failed: count=1 flags=0x5"));
  /* The parent's allocator is untouched by the child. */
  assert_int_equal(stats().used_pages, 0);
}

static void big_kernel_assert(void) {
  palloc_get_multiple(PAL_ASSERT | PAL_ZERO, TOTAL_PAGES);
  _exit(0);
}

static void pal_assert_too_big_panics(void **state) {
  (void)state;
  char message[256];
  assert_int_equal(run_in_child(big_kernel_assert, message, sizeof message), PANIC_EXIT);
  assert_non_null(strstr(message, "allocation failed"));
}

static void pal_assert_success_returns_page(void **state) {
  (void)state;
  void *p = palloc_get_page(PAL_ASSERT | PAL_USER | PAL_ZERO);
  assert_non_null(p);
  palloc_free_page(p);
  assert_int_equal(page_check(), PAGE_OK);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(layout_splits_like_pintos),
      cmocka_unit_test(user_pool_exhausts_and_refills_to_same_count),
      cmocka_unit_test(kernel_pool_unaffected_by_user_exhaustion),
      cmocka_unit_test(multiple_pages_are_contiguous),
      cmocka_unit_test(pal_zero_really_zeroes),
      cmocka_unit_test(free_multiple_with_wrong_count_changes_nothing),
      cmocka_unit_test(bad_frees_are_reported),
      cmocka_unit_test(get_multiple_zero_returns_null),
      cmocka_unit_test(pal_assert_failure_panics),
      cmocka_unit_test(pal_assert_too_big_panics),
      cmocka_unit_test(pal_assert_success_returns_page),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
