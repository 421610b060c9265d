/* The C ABI's layout and constants, checked at compile time (C11
 * _Static_assert) and, for the status names, at run time. */
#include "testmem.h"

/* page_status is a 32-bit integer in C11 (a uint32_t typedef). */
_Static_assert(sizeof(page_status) == 4, "page_status is 4 bytes");
_Static_assert((page_status)-1 > 0, "page_status is unsigned");

_Static_assert(sizeof(page_config) == 56, "page_config size");
_Static_assert(_Alignof(page_config) == 8, "page_config alignment");
_Static_assert(offsetof(page_config, phys_offset) == 0, "phys_offset");
_Static_assert(offsetof(page_config, irq_save) == 8, "irq_save");
_Static_assert(offsetof(page_config, irq_restore) == 16, "irq_restore");
_Static_assert(offsetof(page_config, panic) == 24, "panic");
_Static_assert(offsetof(page_config, on_misuse) == 32, "on_misuse");
_Static_assert(offsetof(page_config, debug) == 40, "debug");
_Static_assert(sizeof(((page_config *)0)->debug) == 4, "debug is 32 bits");
_Static_assert(offsetof(page_config, cpu_id) == 48, "cpu_id");

_Static_assert(sizeof(page_stats) == 12 * 8, "page_stats size");
_Static_assert(offsetof(page_stats, total_pages) == 0, "total_pages");
_Static_assert(offsetof(page_stats, free_pages) == 8, "free_pages");
_Static_assert(offsetof(page_stats, used_pages) == 16, "used_pages");
_Static_assert(offsetof(page_stats, metadata_pages) == 24, "metadata_pages");
_Static_assert(offsetof(page_stats, regions) == 32, "regions");
_Static_assert(offsetof(page_stats, largest_free_run) == 40, "largest_free_run");
_Static_assert(offsetof(page_stats, high_water_pages) == 48, "high_water_pages");
_Static_assert(offsetof(page_stats, failed_allocs) == 56, "failed_allocs");
_Static_assert(offsetof(page_stats, misuse_reports) == 64, "misuse_reports");
_Static_assert(offsetof(page_stats, metadata_bytes) == 72, "metadata_bytes");
_Static_assert(offsetof(page_stats, user_free_pages) == 80, "user_free_pages");
_Static_assert(offsetof(page_stats, cached_pages) == 88, "cached_pages");

_Static_assert(PAGE_OK == 0 && PAGE_ENOMEM == 1 && PAGE_EINVAL == 2 && PAGE_ENOTMANAGED == 3 &&
                   PAGE_ENOTALLOCATED == 4 && PAGE_ENOTHEAD == 5 && PAGE_ESHARED == 6 &&
                   PAGE_EOVERFLOW == 7 && PAGE_EOVERLAP == 8 && PAGE_ETOOSMALL == 9 &&
                   PAGE_EUNINIT == 10 && PAGE_EBUSY == 11 && PAGE_ECORRUPT == 12,
               "status numbers are ABI");
_Static_assert(KPALLOC_PAGE_SIZE == 4096 && (1 << KPALLOC_PAGE_SHIFT) == KPALLOC_PAGE_SIZE,
               "page size");
_Static_assert(PAGE_ALLOC_ASSERT == 1 && PAGE_ALLOC_ZERO == 2 && PAGE_ALLOC_USER == 4 &&
                   PAGE_ALLOC_DMA32 == 8,
               "flag bits");
_Static_assert(PAGE_POOL_KERNEL == 0 && PAGE_POOL_USER == 1, "pools");
_Static_assert(PAGE_REFCOUNT_MAX == 0x7FFFFFFF, "refcount max");
_Static_assert(KPALLOC_VERSION_MAJOR == 0 && KPALLOC_VERSION_MINOR == 1 && KPALLOC_VERSION_PATCH == 0,
               "version");

static void every_status_number_has_its_c_name(void **state) {
  (void)state;
  static const char *const names[] = {
      "PAGE_OK",       "PAGE_ENOMEM",   "PAGE_EINVAL",       "PAGE_ENOTMANAGED", "PAGE_ENOTALLOCATED",
      "PAGE_ENOTHEAD", "PAGE_ESHARED",  "PAGE_EOVERFLOW",    "PAGE_EOVERLAP",    "PAGE_ETOOSMALL",
      "PAGE_EUNINIT",  "PAGE_EBUSY",    "PAGE_ECORRUPT",
  };
  for (uint32_t s = PAGE_OK; s <= PAGE_ECORRUPT; s++) assert_string_equal(page_status_str(s), names[s]);
}

static void unknown_status_numbers_are_named_page_unknown(void **state) {
  (void)state;
  assert_string_equal(page_status_str(13), "PAGE_UNKNOWN");
  assert_string_equal(page_status_str(0x80000000u), "PAGE_UNKNOWN");
  assert_string_equal(page_status_str(UINT32_MAX), "PAGE_UNKNOWN");
  /* Static strings: the same pointer every time. */
  assert_ptr_equal(page_status_str(PAGE_EBUSY), page_status_str(PAGE_EBUSY));
}

static void zeroed_config_and_stats_are_plain_data(void **state) {
  (void)state;
  page_config cfg = {0};
  assert_int_equal(cfg.phys_offset, 0);
  assert_null(cfg.irq_save);
  page_stats s = {0};
  assert_int_equal(s.user_free_pages, 0);
  assert_int_equal(sizeof cfg.phys_offset, 8);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(every_status_number_has_its_c_name),
      cmocka_unit_test(unknown_status_numbers_are_named_page_unknown),
      cmocka_unit_test(zeroed_config_and_stats_are_plain_data),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
