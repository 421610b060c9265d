/* Uses an installed kpalloc::pintos: Pintos' palloc_* over 1 MiB at 1 MiB. */
#include <stdio.h>
#include <stdlib.h>

#include "kpalloc_pintos.h"

#define PHYS_BASE 0x100000u
#define PHYS_SIZE (1u << 20)

static unsigned char *memory;

/* What a Pintos kernel supplies for palloc_init (see pintos/README.md). */
size_t palloc_platform(page_config *cfg, struct palloc_region *regions, size_t max) {
  (void)max;
  cfg->phys_offset = (uint64_t)(uintptr_t)memory - PHYS_BASE;
  regions[0].start = PHYS_BASE;
  regions[0].end = PHYS_BASE + PHYS_SIZE;
  return 1;
}

int main(void) {
  int errors = 0;
  memory = aligned_alloc(KPALLOC_PAGE_SIZE, PHYS_SIZE);
  if (memory == NULL) return 1;
#ifdef KPALLOC_PINTOS_KAIST
  errors += palloc_init() != PHYS_BASE + PHYS_SIZE;
#else
  palloc_init(SIZE_MAX);
#endif
  void *k = palloc_get_page(PAL_ZERO);
  void *u = palloc_get_multiple(PAL_USER, 2);
  errors += k == NULL || u == NULL;
  palloc_free_page(k);
  palloc_free_multiple(u, 2);
  errors += page_check() != PAGE_OK;
  printf("consumer finished: %d errors\n", errors);
  return errors != 0;
}
