/* page_init, and what every function does before it. Group 1 runs in a
 * process where page_init has not succeeded yet; group 2 after it. */
#include "testmem.h"

/* ---- Group 1: before page_init ---------------------------------------- */

static void region_add_and_alloc_at_before_init_return_euninit(void **state) {
  (void)state;
  testmem_map();
  assert_status(page_region_add(MIB(1), MIB(17), PAGE_POOL_KERNEL), PAGE_EUNINIT);
  assert_status(page_region_add(0, 0, 99), PAGE_EUNINIT);
  assert_status(page_alloc_at(MIB(1), 1, 0), PAGE_EUNINIT);
  assert_status(page_alloc_at(1, 0, 0xFF), PAGE_EUNINIT);
}

static void alloc_and_alloc_aligned_before_init_return_null(void **state) {
  (void)state;
  assert_null(page_alloc(1, 0));
  assert_null(page_alloc(1, PAGE_ALLOC_ZERO | PAGE_ALLOC_DMA32));
  assert_null(page_alloc(0, 0));
  assert_null(page_alloc_aligned(4, 4, 0));
  assert_null(page_alloc_aligned(1, 3, 0));
  assert_null(page_alloc_tagged(1, 0, "before init"));
  /* Not even PAGE_ALLOC_ASSERT does anything before init: NULL, no panic. */
  assert_null(page_alloc(1, PAGE_ALLOC_ASSERT));
}

static void free_get_put_split_before_init_return_euninit(void **state) {
  (void)state;
  void *page = testmem_kva(MIB(2));
  assert_status(page_free(page), PAGE_EUNINIT);
  assert_status(page_free(NULL), PAGE_EUNINIT);
  assert_status(page_free_sized(page, 1), PAGE_EUNINIT);
  assert_status(page_get(page), PAGE_EUNINIT);
  assert_status(page_put(page), PAGE_EUNINIT);
  assert_status(page_split(page), PAGE_EUNINIT);
  assert_status(page_split(NULL), PAGE_EUNINIT);
}

static void queries_before_init_return_zero_or_null(void **state) {
  (void)state;
  void *page = testmem_kva(MIB(2));
  assert_int_equal(page_refcount(page), 0);
  assert_int_equal(page_block_pages(page), 0);
  assert_int_equal(page_to_pa(page), 0);
  assert_null(page_from_pa(MIB(2)));
  assert_null(page_from_pa(0));
  assert_int_equal(page_drain_caches(), 0);
  assert_string_equal(page_status_str(PAGE_EUNINIT), "PAGE_EUNINIT");
}

static void count_live(void *ctx, const page_live_block *block) {
  (void)block;
  (*(int *)ctx)++;
}

static void debugging_calls_before_init_return_euninit_or_nothing(void **state) {
  (void)state;
  assert_status(page_fail_after(1), PAGE_EUNINIT);
  assert_status(page_fail_every(2), PAGE_EUNINIT);
  assert_status(page_fail_every(0), PAGE_EUNINIT);
  assert_status(page_fail_off(), PAGE_EUNINIT);
  int visited = 0;
  assert_status(page_for_each_live(count_live, &visited), PAGE_EUNINIT);
  assert_status(page_for_each_live(NULL, NULL), PAGE_EUNINIT);
  assert_int_equal(visited, 0);
  /* An empty dump: length 0, and the buffer is still NUL-terminated. */
  char text[16];
  memset(text, 'x', sizeof text);
  assert_int_equal(page_dump(text, sizeof text), 0);
  assert_int_equal(text[0], '\0');
  assert_int_equal(text[1], 'x');
  assert_int_equal(page_dump(NULL, 0), 0);
  assert_int_equal(hooks.misuse_calls, 0);
}

static void stats_and_check_before_init_return_euninit_and_write_nothing(void **state) {
  (void)state;
  page_stats s;
  memset(&s, 0x5A, sizeof s);
  page_stats expect;
  memset(&expect, 0x5A, sizeof expect);
  assert_status(page_stats_get(&s), PAGE_EUNINIT);
  assert_memory_equal(&s, &expect, sizeof s);
  assert_status(page_stats_get(NULL), PAGE_EUNINIT);
  assert_status(page_check(), PAGE_EUNINIT);
  /* No allocator, no hooks: nothing was reported. */
  assert_int_equal(hooks.misuse_calls, 0);
  assert_int_equal(hooks.irq_saves, 0);
}

static void init_with_unknown_debug_bits_is_einval_and_leaves_kpalloc_uninitialised(void **state) {
  (void)state;
  page_config cfg = testmem_config();
  cfg.debug = 0x80000000u;
  misuse_reset();
  assert_status(page_init(&cfg), PAGE_EINVAL);
  /* Reported once through the rejected config's own hook, with its address;
   * from inside the hook, kpalloc was still uninitialised. */
  assert_int_equal(hooks.misuse_calls, 1);
  assert_status(hooks.misuse[0].status, PAGE_EINVAL);
  assert_ptr_equal(hooks.misuse[0].addr, &cfg);
  assert_status(hooks.misuse[0].stats_status, PAGE_EUNINIT);
  assert_status(page_check(), PAGE_EUNINIT);
  assert_null(page_alloc(1, 0));
  cfg.debug = PAGE_DEBUG_POISON | PAGE_DEBUG_TRACK | 4u;
  assert_status(page_init(&cfg), PAGE_EINVAL);
  assert_status(page_check(), PAGE_EUNINIT);
  misuse_reset();
}

/* ---- Group 2: after page_init ----------------------------------------- */

static int init_group(void **state) {
  (void)state;
  misuse_reset();
  testmem_init();
  return 0;
}

static void init_succeeds_with_empty_counters(void **state) {
  (void)state;
  page_stats s = stats_now();
  page_stats zero;
  memset(&zero, 0, sizeof zero);
  assert_memory_equal(&s, &zero, sizeof s);
  assert_healthy();
  assert_int_equal(hooks.misuse_calls, 0);
}

static void second_init_is_ebusy_reported_once_and_keeps_first_config(void **state) {
  (void)state;
  page_config other = testmem_config();
  other.phys_offset += MIB(1);
  EXPECT_REFUSED(page_init(&other), PAGE_EBUSY, &other);
  /* Still the first phys_offset. */
  assert_ptr_equal(page_from_pa(MIB(3)), testmem_kva(MIB(3)));
}

static void init_with_null_config_after_init_is_ebusy_with_null_address(void **state) {
  (void)state;
  EXPECT_REFUSED(page_init(NULL), PAGE_EBUSY, NULL);
}

/* Already initialised comes first: the installed hook hears of it, and it
 * is counted, whatever else is wrong with the config. */
static void init_with_bad_debug_bits_after_init_is_reported_through_the_installed_hook(void **state) {
  (void)state;
  page_config bad;
  memset(&bad, 0, sizeof bad);
  bad.phys_offset = testmem_phys_offset() + MIB(1);
  bad.debug = 4; /* unknown bit; no hooks of its own */
  page_stats before = stats_now();
  misuse_reset();
  assert_status(page_init(&bad), PAGE_EBUSY);
  assert_misuse_once(PAGE_EBUSY, &bad);
  assert_stats_moved(&before, 1, 0);
  assert_ptr_equal(page_from_pa(MIB(3)), testmem_kva(MIB(3)));
  assert_healthy();
}

static void alloc_without_regions_fails_as_enomem_not_misuse(void **state) {
  (void)state;
  EXPECT_ALLOC_ENOMEM(page_alloc(1, 0));
  EXPECT_ALLOC_ENOMEM(page_alloc_aligned(8, 8, PAGE_ALLOC_ZERO));
  EXPECT_ALLOC_ENOMEM(page_alloc(1, PAGE_ALLOC_USER));
}

static void phys_offset_translates_both_ways(void **state) {
  (void)state;
  for (uint64_t pa = 0; pa < GIB(4) + MIB(64); pa += MIB(255) + 4096 * 7) {
    assert_ptr_equal(page_from_pa(pa), testmem_kva(pa));
    assert_int_equal(page_to_pa(testmem_kva(pa)), pa);
  }
  /* Byte granular, not only pages. */
  assert_int_equal(page_to_pa(testmem_kva(MIB(1) + 123)), MIB(1) + 123);
  /* An address below phys_offset has no physical address. */
  assert_int_equal(page_to_pa((unsigned char *)testmem_kva(0) - PAGE), 0);
  assert_int_equal(page_to_pa(NULL), 0);
}

static void first_region_after_init_is_usable(void **state) {
  (void)state;
  testmem_add_region(MIB(1), MIB(17), PAGE_POOL_KERNEL);
  void *p = page_alloc(1, PAGE_ALLOC_ZERO);
  assert_non_null(p);
  assert_true(page_to_pa(p) >= MIB(1) && page_to_pa(p) < MIB(17));
  assert_status(page_free(p), PAGE_OK);
  assert_healthy();
}

int main(void) {
  const struct CMUnitTest before_init[] = {
      cmocka_unit_test(region_add_and_alloc_at_before_init_return_euninit),
      cmocka_unit_test(alloc_and_alloc_aligned_before_init_return_null),
      cmocka_unit_test(free_get_put_split_before_init_return_euninit),
      cmocka_unit_test(queries_before_init_return_zero_or_null),
      cmocka_unit_test(debugging_calls_before_init_return_euninit_or_nothing),
      cmocka_unit_test(stats_and_check_before_init_return_euninit_and_write_nothing),
      cmocka_unit_test(init_with_unknown_debug_bits_is_einval_and_leaves_kpalloc_uninitialised),
  };
  const struct CMUnitTest after_init[] = {
      cmocka_unit_test(init_succeeds_with_empty_counters),
      cmocka_unit_test(second_init_is_ebusy_reported_once_and_keeps_first_config),
      cmocka_unit_test(init_with_null_config_after_init_is_ebusy_with_null_address),
      cmocka_unit_test(init_with_bad_debug_bits_after_init_is_reported_through_the_installed_hook),
      cmocka_unit_test(alloc_without_regions_fails_as_enomem_not_misuse),
      cmocka_unit_test(phys_offset_translates_both_ways),
      cmocka_unit_test(first_region_after_init_is_usable),
  };
  int failed = cmocka_run_group_tests_name("before_page_init", before_init, NULL, NULL);
  failed += cmocka_run_group_tests_name("after_page_init", after_init, init_group, NULL);
  return failed;
}
