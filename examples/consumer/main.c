/* Uses an installed kpalloc: 1 MiB of "physical memory" at 1 MiB. */
#include <stdio.h>
#include <stdlib.h>

#include "kpalloc.h"

#define PHYS_BASE 0x100000u
#define PHYS_SIZE (1u << 20)

int main(void) {
  int errors = 0;
  unsigned char *memory = aligned_alloc(KPALLOC_PAGE_SIZE, PHYS_SIZE);
  if (memory == NULL) return 1;
  page_config cfg = {0};
  cfg.phys_offset = (uint64_t)(uintptr_t)memory - PHYS_BASE;

  errors += page_init(&cfg) != PAGE_OK;
  errors += page_region_add(PHYS_BASE, PHYS_BASE + PHYS_SIZE, PAGE_POOL_KERNEL) != PAGE_OK;
  unsigned char *p = page_alloc(4, PAGE_ALLOC_ZERO);
  errors += p == NULL || p[0] != 0 || page_block_pages(p) != 4;
  errors += page_free(p) != PAGE_OK;
  errors += page_check() != PAGE_OK;
  printf("kpalloc %d.%d.%d consumer: %s\n", KPALLOC_VERSION_MAJOR, KPALLOC_VERSION_MINOR,
         KPALLOC_VERSION_PATCH, page_status_str(PAGE_OK));
  printf("consumer finished: %d errors\n", errors);
  return errors != 0;
}
