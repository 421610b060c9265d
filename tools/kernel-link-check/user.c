/* A kernel object that calls every kpalloc function; compiled like kernel
 * code (see tools/kernel_link_check.sh) and linked with the freestanding
 * libkpalloc.a. Never run: only linked and inspected. */
#include "kpalloc.h"

static uint64_t save(void) { return 0; }
static void restore(uint64_t flags) { (void)flags; }

void _start(void)
{
	struct page_config cfg = { .phys_offset = 0, .irq_save = save, .irq_restore = restore };
	struct page_stats stats;
	page_init(&cfg);
	page_region_add(0x100000, 0x200000, PAGE_POOL_KERNEL);
	void *p = page_alloc(1, 0);
	void *q = page_alloc_aligned(2, 2, PAGE_ALLOC_ZERO);
	page_alloc_at(0x180000, 1, 0);
	page_get(p);
	page_put(p);
	page_split(q);
	page_free(q);
	page_refcount(p);
	page_block_pages(p);
	page_from_pa(page_to_pa(p));
	page_stats_get(&stats);
	page_check();
	page_status_str(PAGE_OK);
	for (;;)
		;
}
