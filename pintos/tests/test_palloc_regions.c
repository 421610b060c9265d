/* palloc_init_regions: how memory maps are split into the two pools. Each
 * case runs in its own process, since kpalloc is set up once per process. */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <unistd.h>

#include "support.h"

#define MEM_SIZE (4 * MIB)

/* Not used: these cases call palloc_init_regions directly. */
size_t palloc_platform(page_config *cfg, struct palloc_region *regions, size_t max) {
  (void)cfg, (void)regions, (void)max;
  return 0;
}

static struct palloc_layout layout;

static page_status init(const struct palloc_region *regions, size_t count, size_t limit) {
  page_config cfg = test_config(MEM_SIZE);
  return palloc_init_regions(&cfg, regions, count, limit, &layout);
}

static page_stats stats(void) {
  page_stats s;
  if (page_stats_get(&s) != PAGE_OK) _exit(90);
  return s;
}

#define CHECK(cond, code) \
  do {                    \
    if (!(cond)) _exit(code); \
  } while (0)

static void in_child(void (*body)(void)) {
  char message[128];
  assert_int_equal(run_in_child(body, message, sizeof message), 0);
}

static void no_user_pool(void) {
  const struct palloc_region r = {PHYS_BASE, PHYS_BASE + MIB};
  CHECK(init(&r, 1, 0) == PAGE_OK, 1);
  CHECK(layout.user_pages == 0 && layout.user_regions == 0, 2);
  CHECK(layout.kernel_pages == MIB / PG, 3);
  CHECK(palloc_get_page(PAL_USER) == NULL, 4);
  CHECK(misuse_log.count == 0, 5); /* an empty pool is exhaustion, not misuse */
  CHECK(palloc_get_page(0) != NULL, 6);
  _exit(0);
}
static void user_page_limit_zero_means_no_user_pool(void **state) {
  (void)state;
  in_child(no_user_pool);
}

static void tiny_kernel_piece(void) {
  /* 10 and 11 pages (given unsorted), limit 10: the kernel's 11 pages end
   * one page into the second region; that piece is too small for a region
   * and is left out. So is a region of one page. */
  const struct palloc_region r[] = {
      {PHYS_BASE + 11 * PG, PHYS_BASE + 22 * PG},
      {PHYS_BASE + 30 * PG, PHYS_BASE + 31 * PG}, /* one page: left out */
      {PHYS_BASE, PHYS_BASE + 10 * PG},
  };
  CHECK(init(r, 3, 10) == PAGE_OK, 1);
  CHECK(layout.kernel_pages == 10 && layout.kernel_regions == 1, 2);
  CHECK(layout.user_pages == 10 && layout.user_regions == 1, 3);
  CHECK(layout.mem_end == PHYS_BASE + 22 * PG, 4);
  CHECK(stats().regions == 2 && stats().total_pages == 20, 5);
  void *u = palloc_get_page(PAL_USER);
  CHECK(u != NULL && page_to_pa(u) >= PHYS_BASE + 12 * PG, 6);
  CHECK(misuse_log.count == 0, 7);
  _exit(0);
}
static void tiny_pieces_are_not_split_off(void **state) {
  (void)state;
  in_child(tiny_kernel_piece);
}

static void straddle(void) {
  /* One 256-page region, limit 100: split at page 156. */
  const struct palloc_region r = {PHYS_BASE, PHYS_BASE + 256 * PG};
  CHECK(init(&r, 1, 100) == PAGE_OK, 1);
  CHECK(layout.kernel_pages == 156 && layout.user_pages == 100, 2);
  void *u = palloc_get_page(PAL_USER);
  CHECK(u != NULL && page_to_pa(u) >= PHYS_BASE + 156 * PG, 3);
  void *k = palloc_get_page(0);
  CHECK(k != NULL && page_to_pa(k) < PHYS_BASE + 156 * PG, 4);
  _exit(0);
}
static void straddling_region_is_split(void **state) {
  (void)state;
  in_child(straddle);
}

static void overlap(void) {
  const struct palloc_region r[] = {
      {PHYS_BASE, PHYS_BASE + 64 * PG},
      {PHYS_BASE + 63 * PG, PHYS_BASE + 128 * PG},
  };
  CHECK(init(r, 2, 10) == PAGE_EOVERLAP, 1);
  CHECK(misuse_log.status == PAGE_EOVERLAP && misuse_log.count == 1, 2);
  CHECK(palloc_misuse_count() == 1, 3);
  CHECK(stats().regions == 0, 4);
  _exit(0);
}
static void overlapping_regions_add_nothing(void **state) {
  (void)state;
  in_child(overlap);
}

static void too_many(void) {
  struct palloc_region r[PALLOC_MAX_REGIONS + 1];
  for (size_t i = 0; i <= PALLOC_MAX_REGIONS; i++)
    r[i] = (struct palloc_region){PHYS_BASE + i * 4 * PG, PHYS_BASE + (i * 4 + 2) * PG};
  CHECK(init(r, PALLOC_MAX_REGIONS + 1, 10) == PAGE_EINVAL, 1);
  CHECK(misuse_log.status == PAGE_EINVAL && stats().regions == 0, 2);
  _exit(0);
}
static void too_many_regions_are_refused(void **state) {
  (void)state;
  in_child(too_many);
}

static void twice(void) {
  const struct palloc_region r = {PHYS_BASE, PHYS_BASE + 16 * PG};
  CHECK(init(&r, 1, 4) == PAGE_OK, 1);
  CHECK(init(&r, 1, 4) == PAGE_EBUSY, 2);
  CHECK(stats().regions == 2, 3);
  _exit(0);
}
static void second_init_is_refused(void **state) {
  (void)state;
  in_child(twice);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(user_page_limit_zero_means_no_user_pool),
      cmocka_unit_test(tiny_pieces_are_not_split_off),
      cmocka_unit_test(straddling_region_is_split),
      cmocka_unit_test(overlapping_regions_add_nothing),
      cmocka_unit_test(too_many_regions_are_refused),
      cmocka_unit_test(second_init_is_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
