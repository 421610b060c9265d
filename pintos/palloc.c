/* Pintos' page allocator (threads/palloc.c) on top of kpalloc's public API.
 *
 * Drop-in for the original 80x86 Pintos (default) and KAIST's x86-64 Pintos
 * (-DKPALLOC_PINTOS_KAIST); see include/kpalloc_pintos.h and
 * pintos/README.md. Needs only <stddef.h> and <stdint.h>, which Pintos'
 * own lib/ provides.
 *
 * kpalloc keeps the two pools, the locking (through page_config's irq
 * hooks), the block lengths and the check of the page counts Pintos passes
 * to the free functions (page_free_sized); this file splits memory into
 * the pools. For Pintos' poisoning of freed pages, set PAGE_DEBUG_POISON. */

#include "kpalloc_pintos.h"

_Static_assert(PAL_ASSERT == PAGE_ALLOC_ASSERT, "PAL_ASSERT is PAGE_ALLOC_ASSERT");
_Static_assert(PAL_ZERO == PAGE_ALLOC_ZERO, "PAL_ZERO is PAGE_ALLOC_ZERO");
_Static_assert(PAL_USER == PAGE_ALLOC_USER, "PAL_USER is PAGE_ALLOC_USER");

#define PAGE_MASK ((uint64_t)KPALLOC_PAGE_SIZE - 1)

/* The kernel's misuse hook, kept from palloc_init_regions' config. */
static void (*misuse_hook)(page_status, const void *);
static size_t misuse_count; /* a native word: atomic without libatomic on i386 */
static struct palloc_layout layout_done;

#ifdef KPALLOC_PINTOS_KAIST
size_t user_page_limit = SIZE_MAX;
#endif

/* Reports a call this layer refuses, as kpalloc reports its own. */
static void report(page_status status, const void *addr) {
  __atomic_fetch_add(&misuse_count, 1, __ATOMIC_RELAXED);
  if (misuse_hook != NULL) misuse_hook(status, addr);
}

/* Whole pages of `r`, rounded inward. */
static uint64_t region_pages(const struct palloc_region *r) {
  if (r->start > UINT64_MAX - PAGE_MASK) return 0;
  uint64_t start = (r->start + PAGE_MASK) & ~PAGE_MASK;
  uint64_t end = r->end & ~PAGE_MASK;
  return end > start ? (end - start) / KPALLOC_PAGE_SIZE : 0;
}

static page_status add(uint64_t start, uint64_t pages, uint32_t pool, struct palloc_layout *out) {
  page_status status = page_region_add(start, start + pages * KPALLOC_PAGE_SIZE, pool);
  if (status != PAGE_OK) return status;
  if (pool == PAGE_POOL_USER) {
    out->user_pages += (size_t)pages;
    out->user_regions++;
  } else {
    out->kernel_pages += (size_t)pages;
    out->kernel_regions++;
  }
  return PAGE_OK;
}

page_status palloc_init_regions(const page_config *cfg, const struct palloc_region *regions,
                                size_t count, size_t user_page_limit_,
                                struct palloc_layout *layout) {
  struct palloc_region sorted[PALLOC_MAX_REGIONS];
  struct palloc_layout done = {0};
  size_t n = 0;

  page_status status = page_init(cfg);
  if (status != PAGE_OK) return status;
  misuse_hook = cfg != NULL ? cfg->on_misuse : NULL;
  if (count > PALLOC_MAX_REGIONS || (regions == NULL && count != 0)) {
    report(PAGE_EINVAL, regions);
    return PAGE_EINVAL;
  }

  /* Page-rounded copies of the regions big enough to add, by address. */
  for (size_t i = 0; i < count; i++) {
    uint64_t pages = region_pages(&regions[i]);
    if (pages < PALLOC_MIN_PIECE_PAGES) continue;
    struct palloc_region r = {(regions[i].start + PAGE_MASK) & ~PAGE_MASK, 0};
    r.end = r.start + pages * KPALLOC_PAGE_SIZE;
    size_t j = n++;
    for (; j > 0 && sorted[j - 1].start > r.start; j--) sorted[j] = sorted[j - 1];
    sorted[j] = r;
  }
  uint64_t total = 0;
  for (size_t i = 0; i < n; i++) {
    if (i > 0 && sorted[i].start < sorted[i - 1].end) {
      report(PAGE_EOVERLAP, (const void *)(uintptr_t)sorted[i].start);
      return PAGE_EOVERLAP;
    }
    total += (sorted[i].end - sorted[i].start) / KPALLOC_PAGE_SIZE;
    if (sorted[i].end > done.mem_end) done.mem_end = sorted[i].end;
  }

  /* As the original palloc_init: half to the user pool, at most the limit;
   * the kernel pool from the bottom of memory, the user pool above it. */
  uint64_t user = total / 2;
  if (user > user_page_limit_) user = user_page_limit_;
  uint64_t kernel_left = total - user;
  for (size_t i = 0; i < n; i++) {
    uint64_t start = sorted[i].start;
    uint64_t pages = (sorted[i].end - start) / KPALLOC_PAGE_SIZE;
    uint64_t k = kernel_left < pages ? kernel_left : pages;
    uint64_t u = pages - k;
    kernel_left -= k;
    /* A piece too small for kpalloc's metadata and a page is left out. */
    if (k >= PALLOC_MIN_PIECE_PAGES && (status = add(start, k, PAGE_POOL_KERNEL, &done)) != PAGE_OK)
      return status;
    if (u >= PALLOC_MIN_PIECE_PAGES &&
        (status = add(start + k * KPALLOC_PAGE_SIZE, u, PAGE_POOL_USER, &done)) != PAGE_OK)
      return status;
  }

  layout_done = done;
  if (layout != NULL) *layout = done;
  return PAGE_OK;
}

/* Initialises from palloc_platform(); a failure stops the kernel. */
static const struct palloc_layout *init_from_platform(size_t limit) {
  page_config cfg = {0};
  struct palloc_region regions[PALLOC_MAX_REGIONS];
  size_t count = palloc_platform(&cfg, regions, PALLOC_MAX_REGIONS);
  page_status status = palloc_init_regions(&cfg, regions, count, limit, NULL);
  if (status != PAGE_OK) {
    if (cfg.panic != NULL) cfg.panic("palloc_init: kpalloc refused the memory map");
    for (;;) continue;
  }
  return &layout_done;
}

#ifdef KPALLOC_PINTOS_KAIST
uint64_t palloc_init(void) { return init_from_platform(user_page_limit)->mem_end; }
#else
void palloc_init(size_t user_page_limit_) { (void)init_from_platform(user_page_limit_); }
#endif

void *palloc_get_multiple(enum palloc_flags flags, size_t page_cnt) {
  /* kpalloc refuses a zero count (NULL, reported as PAGE_EINVAL): Pintos'
   * bitmap would hand out the pool's first page. */
  return page_alloc(page_cnt, (uint32_t)flags);
}

void *palloc_get_page(enum palloc_flags flags) { return palloc_get_multiple(flags, 1); }

void palloc_free_multiple(void *pages, size_t page_cnt) {
  /* A count other than the block's length is refused (PAGE_EINVAL), as are
   * NULL, unmanaged, free and interior pages: reported, nothing freed. */
  (void)page_free_sized(pages, page_cnt);
}

void palloc_free_page(void *page) { palloc_free_multiple(page, 1); }

const struct palloc_layout *palloc_get_layout(void) { return &layout_done; }

uint64_t palloc_misuse_count(void) { return (uint64_t)__atomic_load_n(&misuse_count, __ATOMIC_RELAXED); }
