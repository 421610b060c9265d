/* page_stats_get and page_check: the counters' rules, metadata cost, and
 * detection of corrupt metadata. Kernel region [1 MiB, 17 MiB), user region
 * [32 MiB, 34 MiB). */
#include "testmem.h"

static uint64_t meta_pages;

static int setup(void **state) {
  (void)state;
  testmem_init();
  meta_pages = (testmem_add_region(MIB(1), MIB(17), PAGE_POOL_KERNEL) - MIB(1)) / PAGE;
  testmem_add_region(MIB(32), MIB(34), PAGE_POOL_USER);
  return 0;
}

static void assert_invariant(void) {
  page_stats s = stats_now();
  assert_int_equal(s.free_pages, s.total_pages - s.metadata_pages - s.used_pages);
  assert_true(s.user_free_pages <= s.free_pages);
  assert_true(s.largest_free_run <= s.free_pages);
  assert_true(s.high_water_pages >= s.used_pages);
  assert_healthy();
}

static void free_is_total_minus_metadata_minus_used_after_every_operation(void **state) {
  (void)state;
  assert_invariant();
  void *a = page_alloc(10, 0);
  assert_invariant();
  void *b = page_alloc_aligned(3, 16, PAGE_ALLOC_ZERO);
  assert_invariant();
  void *u = page_alloc(5, PAGE_ALLOC_USER);
  assert_invariant();
  assert_status(page_alloc_at(MIB(8), 2, 0), PAGE_OK);
  assert_invariant();
  assert_status(page_get(a), PAGE_OK);
  assert_invariant();
  assert_status(page_put(a), PAGE_OK);
  assert_status(page_split(a), PAGE_OK);
  assert_invariant();
  for (size_t i = 0; i < 10; i++) assert_status(page_put(page_n(a, i)), PAGE_OK);
  assert_invariant();
  assert_status(page_free(b), PAGE_OK);
  assert_status(page_free(u), PAGE_OK);
  assert_status(page_free(page_from_pa(MIB(8))), PAGE_OK);
  assert_invariant();
}

static void used_pages_count_blocks_and_high_water_keeps_the_peak(void **state) {
  (void)state;
  page_stats s0 = stats_now();
  uint64_t peak = s0.high_water_pages;
  void *a = page_alloc(200, 0);
  void *b = page_alloc(100, PAGE_ALLOC_USER);
  page_stats s1 = stats_now();
  assert_int_equal(s1.used_pages, s0.used_pages + 300);
  uint64_t want = s0.used_pages + 300 > peak ? s0.used_pages + 300 : peak;
  assert_int_equal(s1.high_water_pages, want);
  assert_status(page_free(a), PAGE_OK);
  assert_status(page_free(b), PAGE_OK);
  page_stats s2 = stats_now();
  assert_int_equal(s2.used_pages, s0.used_pages);
  assert_int_equal(s2.high_water_pages, want);
  void *c = page_alloc(1, 0);
  assert_int_equal(stats_now().high_water_pages, want);
  assert_status(page_free(c), PAGE_OK);
}

static void largest_free_run_follows_fragmentation(void **state) {
  (void)state;
  page_stats s0 = stats_now();
  uint64_t kernel_usable = MIB(16) / PAGE - meta_pages;
  assert_int_equal(s0.largest_free_run, kernel_usable);
  void *a = page_alloc(1000, 0);
  void *pin = page_alloc(1, 0);
  assert_int_equal(stats_now().largest_free_run, kernel_usable - 1001);
  assert_status(page_free(a), PAGE_OK);
  assert_int_equal(stats_now().largest_free_run, kernel_usable - 1001);
  assert_status(page_free(pin), PAGE_OK);
  assert_int_equal(stats_now().largest_free_run, kernel_usable);
}

static void user_free_pages_counts_the_user_pool_only(void **state) {
  (void)state;
  page_stats s0 = stats_now();
  void *k = page_alloc(7, 0);
  assert_int_equal(stats_now().user_free_pages, s0.user_free_pages);
  void *u = page_alloc(7, PAGE_ALLOC_USER);
  page_stats s1 = stats_now();
  assert_int_equal(s1.user_free_pages, s0.user_free_pages - 7);
  assert_int_equal(s1.free_pages, s0.free_pages - 14);
  assert_status(page_free(k), PAGE_OK);
  assert_status(page_free(u), PAGE_OK);
  assert_int_equal(stats_now().user_free_pages, s0.user_free_pages);
}

static void failed_allocs_count_enomem_and_misuse_reports_count_misuse(void **state) {
  (void)state;
  page_stats s0 = stats_now();
  assert_null(page_alloc(SIZE_MAX / 2, 0));             /* ENOMEM */
  assert_null(page_alloc(1, PAGE_ALLOC_USER | PAGE_ALLOC_DMA32 | 64)); /* EINVAL */
  assert_null(page_alloc(0, 0));                        /* EINVAL */
  assert_status(page_free(NULL), PAGE_ENOTMANAGED);
  assert_null(page_alloc(MIB(64) / PAGE, PAGE_ALLOC_USER)); /* ENOMEM */
  page_stats s1 = stats_now();
  assert_int_equal(s1.failed_allocs, s0.failed_allocs + 2);
  assert_int_equal(s1.misuse_reports, s0.misuse_reports + 3);
}

static void metadata_costs_about_4_13_bytes_per_page_in_a_1_gib_region(void **state) {
  (void)state;
  page_stats s0 = stats_now();
  testmem_add_region(GIB(1), GIB(2), PAGE_POOL_KERNEL);
  page_stats s1 = stats_now();
  uint64_t pages = GIB(1) / PAGE;
  uint64_t bytes = s1.metadata_bytes - s0.metadata_bytes;
  double per_page = (double)bytes / (double)pages;
  assert_int_equal(s1.total_pages - s0.total_pages, pages);
  assert_true(per_page > 4.0 && per_page < 4.2);
  assert_int_equal(s1.metadata_pages - s0.metadata_pages, (bytes + PAGE - 1) / PAGE);
  assert_int_equal(s1.largest_free_run, pages - (s1.metadata_pages - s0.metadata_pages));
  assert_healthy();
}

static void stats_get_with_null_is_einval_reported_with_null(void **state) {
  (void)state;
  EXPECT_REFUSED(page_stats_get(NULL), PAGE_EINVAL, NULL);
}

static void put_p(void *p) { assert_status(page_put(p), PAGE_OK); }

static void check_finds_a_corrupt_slot_reports_its_page_and_changes_nothing(void **state) {
  (void)state;
  void *p = page_alloc(1, 0);
  assert_non_null(p);
  assert_status(page_get(p), PAGE_OK);
  /* p's slot in the metadata: the word page_put changes (2 -> 1). Pages'
   * slots are consecutive 32-bit words. */
  uint32_t *slot = tm_find_changed_word(testmem_kva(MIB(1)), meta_pages * PAGE, put_p, p);
  assert_non_null(slot);
  assert_int_equal(*slot, 1);
  void *victim = page_n(p, 5); /* a free page */
  assert_int_equal(slot[5], 0);
  static const uint32_t bad[] = {
      1,           /* a free page whose slot claims a head */
      0x80000002u, /* an interior tag with no head before it */
      PAGE_REFCOUNT_MAX,
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    slot[5] = bad[i];
    page_stats before = stats_now();
    misuse_reset();
    assert_status(page_check(), PAGE_ECORRUPT);
    assert_misuse_once(PAGE_ECORRUPT, victim);
    assert_stats_moved(&before, 1, 0);
    /* Checking again finds it again: page_check repairs nothing. */
    assert_status(page_check(), PAGE_ECORRUPT);
  }
  slot[5] = 0;
  assert_healthy();
  assert_status(page_free(p), PAGE_OK);
}

int main(void) {
#define T(f) cmocka_unit_test_teardown(f, tm_teardown_all_free)
  const struct CMUnitTest tests[] = {
      T(free_is_total_minus_metadata_minus_used_after_every_operation),
      T(used_pages_count_blocks_and_high_water_keeps_the_peak),
      T(largest_free_run_follows_fragmentation),
      T(user_free_pages_counts_the_user_pool_only),
      T(failed_allocs_count_enomem_and_misuse_reports_count_misuse),
      T(stats_get_with_null_is_einval_reported_with_null),
      T(check_finds_a_corrupt_slot_reports_its_page_and_changes_nothing),
      T(metadata_costs_about_4_13_bytes_per_page_in_a_1_gib_region),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
