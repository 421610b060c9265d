/* The KAIST x86-64 flavour (-DKPALLOC_PINTOS_KAIST): uint64_t palloc_init
 * (void), with the user-pool limit in the global user_page_limit (-ul). */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <unistd.h>

#include "support.h"

#ifndef KPALLOC_PINTOS_KAIST
#error "this test is built against the KAIST flavour of palloc.c"
#endif

/* Like KAIST's resolve_area_info: a small area and the extended memory
 * above the kernel image. */
#define MEM_SIZE (9 * MIB)
#define BASE_START PHYS_BASE
#define BASE_END (PHYS_BASE + 512 * 1024)
#define EXT_START (2 * MIB)
#define EXT_END (10 * MIB)
#define TOTAL_PAGES (((BASE_END - BASE_START) + (EXT_END - EXT_START)) / PG)

size_t palloc_platform(page_config *cfg, struct palloc_region *regions, size_t max) {
  assert_true(max >= 2);
  *cfg = test_config(MEM_SIZE);
  regions[0] = (struct palloc_region){BASE_START, BASE_END};
  regions[1] = (struct palloc_region){EXT_START, EXT_END};
  return 2;
}

static void default_limit_gives_half_and_returns_mem_end(void **state) {
  (void)state;
  assert_int_equal(user_page_limit, SIZE_MAX);
  assert_int_equal(palloc_init(), EXT_END);
  const struct palloc_layout *l = palloc_get_layout();
  assert_int_equal(l->user_pages, TOTAL_PAGES / 2);
  assert_int_equal(l->kernel_pages + l->user_pages, TOTAL_PAGES);
  assert_int_equal(page_check(), PAGE_OK);

  uint64_t user_before = user_free_pages();
  void *k = palloc_get_page(PAL_ZERO);
  void *u = palloc_get_multiple(PAL_USER | PAL_ZERO, 3);
  assert_non_null(k);
  assert_non_null(u);
  assert_true(page_to_pa(u) >= EXT_START && page_to_pa(u) > page_to_pa(k));
  assert_int_equal(user_free_pages(), user_before - 3);
  assert_true(user_before < l->user_pages); /* the pool holds its metadata */
  palloc_free_page(k);
  palloc_free_multiple(u, 3);
  assert_null(palloc_get_multiple(0, 0)); /* KAIST's palloc would return the pool base */
}

static void limited(void) {
  user_page_limit = 10; /* as `-ul=10` on the kernel command line */
  if (palloc_init() != EXT_END) _exit(1);
  if (palloc_get_layout()->user_pages != 10) _exit(2);
  size_t n = 0;
  while (palloc_get_page(PAL_USER) != NULL) n++;
  if (n != 9) _exit(3); /* one page of the ten holds the pool's metadata */
  if (page_check() != PAGE_OK) _exit(4);
  _exit(0);
}

static void user_page_limit_is_honoured(void **state) {
  (void)state;
  char message[128];
  assert_int_equal(run_in_child(limited, message, sizeof message), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      /* The child must start before the parent initialises kpalloc. */
      cmocka_unit_test(user_page_limit_is_honoured),
      cmocka_unit_test(default_limit_gives_half_and_returns_mem_end),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
