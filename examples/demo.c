/* The host demonstration: an aligned buffer stands for 8 MiB of physical
 * memory at 1 MiB; kpalloc manages it through the C API alone. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kpalloc.h"

#define PHYS_BASE 0x100000u
#define PHYS_SIZE (8u << 20)

static int errors;

static void expect(int ok, const char *what) {
  printf("  %-52s %s\n", what, ok ? "ok" : "FAILED");
  errors += !ok;
}

static void on_misuse(page_status status, const void *addr) {
  printf("  (misuse reported: %s at %p)\n", page_status_str(status), addr);
}

static void print_stats(const char *when) {
  page_stats s;
  page_stats_get(&s);
  printf("%s: total %llu, free %llu, used %llu, metadata %llu pages "
         "(%.2f bytes/page), largest free run %llu\n",
         when, (unsigned long long)s.total_pages, (unsigned long long)s.free_pages,
         (unsigned long long)s.used_pages, (unsigned long long)s.metadata_pages,
         (double)s.metadata_bytes / (double)s.total_pages,
         (unsigned long long)s.largest_free_run);
}

int main(void) {
  unsigned char *memory = aligned_alloc(KPALLOC_PAGE_SIZE, PHYS_SIZE);
  if (!memory) return 1;
  page_config cfg = {0};
  cfg.phys_offset = (uint64_t)(uintptr_t)memory - PHYS_BASE;
  cfg.on_misuse = on_misuse;

  printf("kpalloc %d.%d.%d demo\n", KPALLOC_VERSION_MAJOR, KPALLOC_VERSION_MINOR,
         KPALLOC_VERSION_PATCH);
  expect(page_init(&cfg) == PAGE_OK, "page_init");
  expect(page_region_add(PHYS_BASE, PHYS_BASE + PHYS_SIZE, PAGE_POOL_KERNEL) == PAGE_OK,
         "page_region_add 8 MiB at 1 MiB");
  print_stats("after init");

  void *one = page_alloc(1, PAGE_ALLOC_ZERO);
  expect(one != NULL && ((unsigned char *)one)[100] == 0, "page_alloc(1, ZERO)");
  void *big = page_alloc_aligned(16, 16, 0);
  expect(big && page_to_pa(big) % (16 * KPALLOC_PAGE_SIZE) == 0,
         "page_alloc_aligned(16, 16): physically aligned");
  printf("  one page at pa 0x%llx, 16 pages at pa 0x%llx\n",
         (unsigned long long)page_to_pa(one), (unsigned long long)page_to_pa(big));

  expect(page_get(one) == PAGE_OK && page_refcount(one) == 2, "page_get: shared, refcount 2");
  expect(page_free(one) == PAGE_ESHARED, "page_free of a shared page is refused");
  expect(page_put(one) == PAGE_OK && page_refcount(one) == 1, "page_put: refcount 1");

  expect(page_free((char *)big + KPALLOC_PAGE_SIZE) == PAGE_ENOTHEAD,
         "page_free of an interior page is refused");
  expect(page_split(big) == PAGE_OK, "page_split(16 pages)");
  for (int i = 0; i < 16; i++)
    if (page_free((char *)big + i * KPALLOC_PAGE_SIZE) != PAGE_OK) errors++;
  expect(page_free(one) == PAGE_OK, "page_free");
  expect(page_free(one) == PAGE_ENOTALLOCATED, "double free is refused");
  expect(page_check() == PAGE_OK, "page_check");
  print_stats("at the end");

  printf("demo finished: %d errors\n", errors);
  return errors != 0;
}
