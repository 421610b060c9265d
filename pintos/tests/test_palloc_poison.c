/* -DKPALLOC_PINTOS_POISON: freed pages are filled with 0xcc, as Pintos does
 * without NDEBUG, but only when the free really happens. */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "support.h"

#ifndef KPALLOC_PINTOS_POISON
#error "this test is built against palloc.c with KPALLOC_PINTOS_POISON"
#endif

size_t palloc_platform(page_config *cfg, struct palloc_region *regions, size_t max) {
  assert_true(max >= 1);
  *cfg = test_config(MIB);
  regions[0] = (struct palloc_region){PHYS_BASE, PHYS_BASE + MIB};
  return 1;
}

static int setup(void **state) {
  (void)state;
  palloc_init(SIZE_MAX);
  return 0;
}

static void all_bytes(const unsigned char *p, size_t n, unsigned char value) {
  for (size_t i = 0; i < n; i++) assert_int_equal(p[i], value);
}

static void freed_pages_are_poisoned(void **state) {
  (void)state;
  unsigned char *p = palloc_get_multiple(PAL_USER, 3);
  assert_non_null(p);
  memset(p, 0x11, 3 * PG);
  palloc_free_multiple(p, 3);
  all_bytes(p, 3 * PG, 0xcc);
}

static void refused_frees_leave_the_contents(void **state) {
  (void)state;
  unsigned char *p = palloc_get_multiple(0, 2);
  assert_non_null(p);
  memset(p, 0x22, 2 * PG);
  palloc_free_multiple(p, 1); /* wrong count */
  assert_int_equal(misuse_log.status, PAGE_EINVAL);
  all_bytes(p, 2 * PG, 0x22);
  assert_int_equal(page_get(p), PAGE_OK); /* shared: page_free refuses */
  palloc_free_multiple(p, 2);
  assert_int_equal(misuse_log.status, PAGE_ESHARED);
  all_bytes(p, 2 * PG, 0x22);
  assert_int_equal(page_put(p), PAGE_OK);
  palloc_free_multiple(p, 2);
  all_bytes(p, 2 * PG, 0xcc);
  assert_int_equal(page_check(), PAGE_OK);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(freed_pages_are_poisoned),
      cmocka_unit_test(refused_frees_leave_the_contents),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
